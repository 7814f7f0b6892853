import json
import shutil
from pathlib import Path

import pytest

from stcrank.data.eshop.reader import read_eshop, read_manifest, read_table
from stcrank.data.eshop.schema import F_LOG_COLUMNS, EshopSchemaError
from stcrank.data.eshop.synth import synth_eshop


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eshop_reader") / "logs"
    synth_eshop(
        out=str(out), users=40, sessions=120, items=3000, candidates=60, homepage_candidates=40, homepage_size=10
    )
    return out


@pytest.fixture
def copy(logs, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(logs, target)
    return target


def test_reads_and_validates_both_logs(logs):
    data = read_eshop(logs)
    assert (
        data.f_log.num_rows == data.manifest["rows"]["f_log"] and data.e_log.num_rows == data.manifest["rows"]["e_log"]
    )
    assert data.feature_sizes["item_id"] == 3001
    plain = read_eshop(logs, with_truth=False)
    assert not [c for c in plain.f_log.column_names + plain.e_log.column_names if c.startswith("truth_")]
    part = read_table(logs / "f_log.parquet", F_LOG_COLUMNS, read_columns=["item_id", "purchase"])
    assert part.column_names == ["item_id", "purchase"]


def test_manifest_problems_are_named(copy):
    manifest = copy / "manifest.json"
    original = json.loads(manifest.read_text())
    manifest.write_text("{not json")
    with pytest.raises(EshopSchemaError, match=r"manifest\.json: not valid JSON"):
        read_eshop(copy)
    manifest.write_text(json.dumps({**original, "schema": "other"}))
    with pytest.raises(EshopSchemaError, match=r"schema is 'other'"):
        read_eshop(copy)
    manifest.write_text(json.dumps({**original, "schema_version": 99}))
    with pytest.raises(EshopSchemaError, match=r"schema_version 99 is not supported"):
        read_eshop(copy)
    manifest.write_text(json.dumps({k: v for k, v in original.items() if k != "feature_sizes"}))
    with pytest.raises(EshopSchemaError, match=r"'feature_sizes' missing"):
        read_manifest(copy)
    manifest.unlink()
    with pytest.raises(EshopSchemaError, match=r"manifest not found"):
        read_eshop(copy)


def test_missing_and_corrupt_files_are_named(copy):
    data = (copy / "f_log.parquet").read_bytes()
    (copy / "f_log.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(EshopSchemaError, match=r"f_log\.parquet: not a readable Parquet file"):
        read_eshop(copy)
    (copy / "f_log.parquet").unlink()
    with pytest.raises(EshopSchemaError, match=r"f_log\.parquet: file not found"):
        read_eshop(copy)


def test_ids_beyond_the_manifest_sizes_are_rejected(copy):
    manifest = copy / "manifest.json"
    values = json.loads(manifest.read_text())
    values["feature_sizes"]["user_id"] = 2
    manifest.write_text(json.dumps(values))
    with pytest.raises(EshopSchemaError, match=r"column 'user_id' has value .*manifest feature size"):
        read_eshop(copy)
