"""A store is not trusted blindly: every load checks each file against the manifest, and `verify` checks the content."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from stcrank.data.recflow.datamodule import RecFlowDataModule
from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.importer import import_recflow
from stcrank.data.recflow.store import RecFlowStore


@pytest.fixture
def store(recflow_release, tmp_path):
    root = tmp_path / "store"
    import_recflow(src=str(recflow_release), dst=str(root))
    return root


def _test_batches(root):
    module = RecFlowDataModule(str(root), eval_batch_size=64, chunk_rows=None)
    return [batch for loader in module.test_dataloader() for batch in loader]


def test_a_partition_cut_to_its_first_rows_is_refused_on_load(store):
    path = store / "days" / "2024-01-15" / "exposures.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 10), path)  # same schema, 10 rows: the metrics would be of 10 exposures
    with pytest.raises(RecFlowFormatError, match=r"2024-01-15/exposures\.parquet: .*the manifest says"):
        _test_batches(store)


def test_partitions_mixed_from_two_days_are_refused_on_load(store):
    day = store / "days"
    shutil.copy(day / "2024-01-14" / "requests.parquet", day / "2024-01-15" / "requests.parquet")
    with pytest.raises(RecFlowFormatError, match=r"2024-01-15/requests\.parquet: .*the manifest says"):
        _test_batches(store)


def test_a_flipped_bit_is_refused_on_load_and_named_by_verify(store):
    path = store / "days" / "2024-01-15" / "candidates.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x04  # inside a data page: same size, same footer
    path.write_bytes(bytes(data))
    with pytest.raises(RecFlowFormatError, match=r"candidates\.parquet"):
        RecFlowStore(store).candidates("2024-01-15")
    command = Path(sys.executable).parent / "stcrank"  # the console script, as a user runs it
    done = subprocess.run([str(command), "data", "verify", str(store)], capture_output=True, text=True)
    assert done.returncode != 0
    assert "days/2024-01-15/candidates.parquet: content SHA-256" in done.stderr


def test_verify_passes_on_a_whole_store_and_names_every_difference(store):
    from stcrank.data.recflow.integrity import verify_store

    summary = verify_store(str(store))
    assert summary["verified"] and summary["files"] == len(RecFlowStore(store).manifest["files"]) > 10
    (store / "days" / "2024-01-13" / "corpus.parquet").unlink()
    shutil.copy(store / "others" / "rank_test.parquet", store / "others" / "extra.parquet")
    path = store / "days" / "2024-01-14" / "exposures.parquet"
    pq.write_table(pq.read_table(path).slice(0, 5), path)
    with pytest.raises(RecFlowFormatError) as caught:
        verify_store(str(store))
    message = str(caught.value)
    assert "3 of" in message and "days/2024-01-13/corpus.parquet: missing" in message
    assert "others/extra.parquet: not in the manifest" in message
    assert "days/2024-01-14/exposures.parquet: " in message and "5 rows, manifest" in message


def test_an_intact_store_gives_the_same_batches(store):
    batches = _test_batches(store)
    assert batches and all(np.isfinite(b["label"].numpy()).all() for b in batches if "label" in b)
