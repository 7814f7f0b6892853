import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from stcrank.data.eshop.reader import read_eshop
from stcrank.data.eshop.schema import E_LOG_COLUMNS, F_LOG_COLUMNS
from stcrank.data.eshop.synth import explore_config_of, load_world, synth_eshop

TINY = dict(users=80, sessions=400, items=3000, candidates=60, max_depth=30, homepage_candidates=40, homepage_size=10)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eshop") / "logs"
    synth_eshop(out=str(out), seed=3, chunk_size=150, **TINY)
    return out


def test_files_and_manifest(logs):
    manifest = json.loads((logs / "manifest.json").read_text())
    assert manifest["schema"] == "stcrank.eshop" and manifest["schema_version"] == 1
    f_log, e_log = pq.read_table(logs / "f_log.parquet"), pq.read_table(logs / "e_log.parquet")
    assert manifest["rows"] == {"f_log": f_log.num_rows, "e_log": e_log.num_rows}
    assert f_log.column_names == [c.name for c in F_LOG_COLUMNS]
    assert e_log.column_names == [c.name for c in E_LOG_COLUMNS]
    sizes = manifest["feature_sizes"]
    assert sizes["user_id"] == 81 and sizes["item_id"] == 3001 and sizes["item_category"] == 13
    stats = manifest["stats"]
    assert 0 < stats["ctr"] < 1 and stats["f_sessions"] == len(set(f_log.column("session_id").to_pylist()))
    assert 0 < stats["exit_no_purchase"] < stats["exit_purchase"] < 1


def test_f_log_rows_are_ordered_sessions_with_paged_requests(logs):
    f = read_eshop(logs).f_log.to_pandas()
    assert f["session_id"].is_monotonic_increasing
    for _, s in f.groupby("session_id"):
        assert s["position"].tolist() == list(range(1, len(s) + 1))
        assert s["exit"].iloc[:-1].eq(False).all()
        assert s["request_id"].nunique() == (len(s) - 1) // 10 + 1
    page = f.groupby("request_id")["page_position"].apply(list)
    assert all(p == list(range(1, len(p) + 1)) for p in page)
    assert (f["request_index"] == (f["position"] - 1) // 10).all()
    assert f["request_id"].is_monotonic_increasing and f["request_id"].iloc[0] == 0
    assert (f["exit"] == ~f["swipe_down"]).all() and not (f["purchase"] & ~f["ipv"]).any()


def test_e_log_links_to_its_f_sessions(logs):
    data = read_eshop(logs)
    e, f = data.e_log.to_pandas(), data.f_log.to_pandas()
    entered = e[e["f_session_id"] >= 0]
    assert (entered["swipe"]).all() and (e["f_session_id"] >= 0).sum() == e["swipe"].sum()
    per_session = f.groupby("session_id").agg(
        p=("purchase", "sum"), d=("position", "max"), t=("trigger_item_id", "first"), v=("visit_id", "first")
    )
    joined = entered.join(per_session, on="f_session_id")
    assert (joined["f_purchases"] == joined["p"]).all() and (joined["f_depth"] == joined["d"]).all()
    assert (joined["item_id"] == joined["t"]).all() and (joined["visit_id"] == joined["v"]).all()
    assert (e["f_purchase"] == (e["f_purchases"] > 0)).all()
    assert (e["request_id"] == e["visit_id"]).all() and e["visit_id"].max() < 400
    assert not (e["swipe"] & ~e["click"]).any()


def test_generation_is_deterministic_and_seeded(logs, tmp_path):
    synth_eshop(out=str(tmp_path / "again"), seed=3, chunk_size=400, **TINY)
    for name in ("f_log.parquet", "e_log.parquet"):
        first, again = pq.read_table(logs / name), pq.read_table(tmp_path / "again" / name)
        assert first.num_rows == again.num_rows
        for column in first.column_names:
            a, b = first.column(column).to_numpy(), again.column(column).to_numpy()
            if column.startswith("truth_"):  # kernels may round the last bit differently with another batch layout
                assert np.allclose(a, b, rtol=1e-5, atol=1e-7), column
            else:
                assert np.array_equal(a, b), column
    synth_eshop(out=str(tmp_path / "other"), seed=4, truth=False, **TINY)
    other = pq.read_table(tmp_path / "other" / "f_log.parquet")
    assert not any(name.startswith("truth_") for name in other.column_names)
    assert not other.equals(pq.read_table(logs / "f_log.parquet").select(other.column_names))


def test_load_world_rebuilds_the_generating_world(logs):
    world = load_world(logs)
    manifest = read_eshop(logs).manifest
    assert world.n_users == 80 and world.n_items == 3000
    f = read_eshop(logs).f_log
    items = torch.from_numpy(f.column("item_id").to_numpy()) - 1
    prices = torch.from_numpy(f.column("item_price").to_numpy())
    assert torch.allclose(world.item_price[items], prices)
    assert explore_config_of(manifest).focus.candidates == 60
    with pytest.raises(ValueError, match="synth_eshop"):
        load_world({"generator": {"name": "export"}})


def test_command_line(tmp_path, capsys):
    from stcrank.cli import main

    with pytest.raises(SystemExit):
        main(["data", "synth-eshop", "--help"])
    assert "Generate e-shop explore/focus logs" in capsys.readouterr().out
    main(
        [
            "data",
            "synth-eshop",
            "--out",
            str(tmp_path / "cli"),
            "--users",
            "30",
            "--sessions",
            "60",
            "--items",
            "3000",
            "--candidates",
            "60",
            "--homepage_candidates",
            "40",
            "--homepage_size",
            "10",
        ]
    )
    assert read_eshop(tmp_path / "cli").manifest["generator"]["sessions"] == 60


def test_bad_arguments():
    with pytest.raises(ValueError, match="sessions"):
        synth_eshop(out="unused", sessions=0)
