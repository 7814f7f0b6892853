import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from stcrank.data.eshop.explore_datamodule import PRODUCT_LABELS, EShopExploreDataModule, look_ahead_events
from stcrank.data.eshop.schema import EshopSchemaError


def test_every_exposure_gets_the_product_labels(eshop_store):
    dm = EShopExploreDataModule(str(eshop_store), batch_size=64)
    dm.setup()
    e_log = pq.read_table(eshop_store / "e_log.parquet")
    assert sum(len(split) for split in dm.splits.values()) == e_log.num_rows
    batch = next(iter(dm.train_dataloader()))
    for task in PRODUCT_LABELS:
        assert batch[f"mask_{task}"].all() and (batch[f"weight_{task}"] == 1).all()
    assert {"user_id", "item_id", "item_category", "item_price", "visit_id"} <= set(batch)
    # Products nest: click >= click*swipe >= click*swipe*Fconv, and click >= click*purchase.
    cols = {k: torch.cat([s.columns[k] for s in dm.splits.values()]) for k in dm.splits["train"].columns}
    assert (cols["label_ctr"] >= cols["label_ctr_sdr"]).all()
    assert (cols["label_ctr_sdr"] >= cols["label_ctr_sdr_cvrf"]).all()
    assert (cols["label_ctr"] >= cols["label_cvr_e"]).all()
    assert cols["label_ctr_sdr_cvrf"].sum() > 0


def test_look_ahead_event_joins_the_f_log_by_session(eshop_store):
    e_log = pq.read_table(eshop_store / "e_log.parquet")
    f_log = pq.read_table(eshop_store / "f_log.parquet", columns=["session_id", "purchase"])
    events = look_ahead_events(e_log, f_log)
    f = f_log.to_pandas()
    bought = set(f.loc[f["purchase"], "session_id"])
    expected = np.array([s in bought for s in e_log.column("f_session_id").to_pylist()])
    np.testing.assert_array_equal(events, expected)
    # The simulator's own per-exposure flag agrees with the join.
    np.testing.assert_array_equal(events, e_log.column("f_purchase").to_numpy())


def test_hand_made_logs_and_broken_joins():
    e_log = pa.table({"swipe": [True, False, True], "f_session_id": pa.array([7, -1, 9], pa.int64())})
    f_log = pa.table({"session_id": pa.array([7, 7, 9], pa.int64()), "purchase": [False, True, False]})
    assert look_ahead_events(e_log, f_log).tolist() == [True, False, False]
    orphan = pa.table({"swipe": [True], "f_session_id": pa.array([5], pa.int64())})
    with pytest.raises(EshopSchemaError, match="session 5"):
        look_ahead_events(orphan, f_log, file="e.parquet")
    inconsistent = pa.table({"swipe": [False], "f_session_id": pa.array([7], pa.int64())})
    with pytest.raises(EshopSchemaError, match="f_session_id"):
        look_ahead_events(inconsistent, f_log)


def test_unknown_tasks_are_rejected(eshop_store):
    with pytest.raises(ValueError, match="subset"):
        EShopExploreDataModule(str(eshop_store), tasks=["ctr", "nope"])
    dm = EShopExploreDataModule(str(eshop_store), tasks=["ctr"])
    assert dm.tasks == ["ctr"]


def test_the_training_shuffle_follows_the_seed(eshop_store):
    def first_rows(seed: int) -> torch.Tensor:
        dm = EShopExploreDataModule(str(eshop_store), batch_size=64, seed=seed)
        dm.setup()
        return next(iter(dm.train_dataloader()))["visit_id"]

    assert torch.equal(first_rows(3), first_rows(3))
    assert not torch.equal(first_rows(3), first_rows(4))
