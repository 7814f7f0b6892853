"""Tests of stcrank.data.recflow.official_candidates and of ``--data.test_source`` (the official test files)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.feather as feather
import pytest

from stcrank.data.recflow.datamodule import RecFlowDataModule
from stcrank.data.recflow.importer import import_recflow
from stcrank.data.recflow.schema import COARSE_CANDIDATE_STAGES
from stcrank.errors import ConfigError

RANK_CONFIG = Path(__file__).resolve().parents[3] / "configs/experiments/recflow/rank/din_baseline.yaml"


def _test_candidates(dm: RecFlowDataModule) -> dict[int, list[tuple[int, float, int]]]:
    """``request_id -> sorted (video_id, label, priority)`` of every test candidate the loader yields."""
    out: dict[int, list[tuple[int, float, int]]] = {}
    for batch in dm.test_dataloader()[1]:
        mask = batch["candidate_mask"]
        for i, request in enumerate(batch["request_id"].tolist()):
            rows = zip(
                (batch["candidates"][i][mask[i]][:, 0] - 1).tolist(),
                batch["candidate_label"][i][mask[i]].tolist(),
                batch["candidate_stage"][i][mask[i]].tolist(),
                strict=True,
            )
            assert request not in out  # every request once
            out[request] = sorted(rows)
    return out


@pytest.mark.parametrize("stages", [None, list(COARSE_CANDIDATE_STAGES)])
def test_official_files_of_a_generated_release_hold_the_stage_rows(recflow_store, stages, caplog):
    with caplog.at_level(logging.INFO, logger="stcrank.data.recflow.datamodule"):
        official = RecFlowDataModule(str(recflow_store), candidate_stages=stages)  # auto
        official_candidates = _test_candidates(official)
    name = "coarse_rank_test" if stages else "rank_test"
    assert official.test_candidates_source == f"official {name} (others/{name}.parquet)"
    assert f"others/{name}.parquet" in caplog.text
    stage_rows = RecFlowDataModule(str(recflow_store), candidate_stages=stages, test_source="stage_rows")
    assert _test_candidates(stage_rows) == official_candidates
    assert stage_rows.test_candidates_source == "stage_rows"
    assert sum(len(rows) for rows in official_candidates.values()) > 1000


@pytest.mark.slow
def test_both_sources_give_identical_test_metrics(recflow_store, tmp_path):
    from stcrank.cli import main

    metrics = {}
    for source in ("official", "stage_rows"):
        root = tmp_path / source
        args = ["test", "-c", str(RANK_CONFIG), f"--data.root={recflow_store}", "--seed_everything=0"]
        args += ["--untrained=true", f"--data.test_source={source}", f"--trainer.default_root_dir={root}"]
        args += [f"--trainer.logger.init_args.save_dir={root}"]
        tested = main(args)
        metrics[source] = {k: float(v) for k, v in tested.trainer.callback_metrics.items()}
        hparams = next(root.rglob("hparams.yaml")).read_text()
        recorded = "official rank_test (others/rank_test.parquet)" if source == "official" else source
        assert f"test_candidates_source: {recorded}" in hparams
    assert metrics["official"] == metrics["stage_rows"]
    assert 0 < metrics["official"]["test/recflow_recall@50"] < 1


def _edited_release(make_release) -> tuple[Path, dict[int, list[tuple[int, float]]]]:
    """A release whose rank_test keeps every other request and flips the label of each request's first row."""
    release = make_release()
    path = release / "others" / "rank_test.feather"
    table = feather.read_table(path)
    data = {name: table.column(name).to_numpy() for name in table.column_names}
    requests = np.unique(data["request_id"])
    kept = np.isin(data["request_id"], requests[::2])
    data = {name: values[kept] for name, values in data.items()}
    first = np.ones(len(data["request_id"]), dtype=bool)
    first[1:] = data["request_id"][1:] != data["request_id"][:-1]
    data["effective_view"] = np.where(first, 1 - data["effective_view"], data["effective_view"])
    feather.write_feather(table.from_pydict(data, schema=table.schema), path)
    expected: dict[int, list[tuple[int, float]]] = {}
    for request, video, label in zip(data["request_id"], data["video_id"], data["effective_view"], strict=True):
        expected.setdefault(int(request), []).append((int(video), float(label)))
    return release, {request: sorted(rows) for request, rows in expected.items()}


def test_an_official_file_that_differs_from_the_stage_rows_is_the_one_evaluated(make_release, tmp_path):
    release, expected = _edited_release(make_release)
    store = tmp_path / "store"
    import_recflow(src=str(release), dst=str(store))
    evaluated = _test_candidates(RecFlowDataModule(str(store)))
    assert {request: sorted((v, y) for v, y, _ in rows) for request, rows in evaluated.items()} == expected
    stage_rows = _test_candidates(RecFlowDataModule(str(store), test_source="stage_rows"))
    assert len(stage_rows) > len(evaluated)  # the file kept half the requests
    assert set(evaluated) < set(stage_rows)


def test_without_the_official_file_auto_uses_the_stage_rows_and_official_is_refused(make_release, tmp_path, caplog):
    release = make_release()
    (release / "others" / "rank_test.feather").unlink()
    store = tmp_path / "store"
    import_recflow(src=str(release), dst=str(store))
    with caplog.at_level(logging.INFO, logger="stcrank.data.recflow.datamodule"):
        dm = RecFlowDataModule(str(store))
        assert _test_candidates(dm)
    assert dm.test_candidates_source == "stage_rows"
    assert "holds no official rank_test" in caplog.text
    with pytest.raises(ConfigError, match=r"--data.test_source official: .*no official rank_test"):
        RecFlowDataModule(str(store), test_source="official").test_dataloader()


def test_impossible_or_unknown_choices_are_one_line_config_errors(recflow_store):
    with pytest.raises(ConfigError, match=r"--data.test_source best: unknown; choose one of"):
        RecFlowDataModule(str(recflow_store), test_source="best")
    odd = RecFlowDataModule(str(recflow_store), candidate_stages=["realshow", "coarse_neg"], test_source="official")
    with pytest.raises(ConfigError, match=r"--data.test_source official: --data.candidate_stages") as error:
        odd.test_dataloader()
    assert "\n" not in str(error.value)
    days = RecFlowDataModule(str(recflow_store)).train_days
    other_day = RecFlowDataModule(str(recflow_store), test_day=days[-1], train_days=days[:-1], test_source="official")
    with pytest.raises(ConfigError, match=r"is not the store's test day"):
        other_day.test_dataloader()
