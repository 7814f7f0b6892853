import pytest
import torch

from stcrank.data.eshop.datamodule import EShopDataModule, split_of_visit
from stcrank.data.eshop.schema import EshopSchemaError
from stcrank.errors import ConfigError
from stcrank_plugins.labels.eshop import SwipeDownLabel, WatchThresholdLabel

LABELS = {
    "cvr": "cvr",
    "vtr": WatchThresholdLabel(5.0),
    "sdr": SwipeDownLabel(first_position_only=True, drop_exit_after_purchase=True),
}


def test_batches_carry_features_labels_masks_and_weights(eshop_store):
    dm = EShopDataModule(str(eshop_store), labels=LABELS, batch_size=64, eval_batch_size=100)
    assert dm.feature_sizes["item_id"] > 1
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    # near-equal batches of at most batch_size (the last one is not a short remainder)
    assert batch["item_id"].dim() == 1 and 60 <= batch["item_id"].shape[0] <= 64
    assert batch["item_id"].dtype == torch.int64
    assert batch["item_price"].dtype == torch.float32
    for task in ("cvr", "vtr", "sdr"):
        assert batch[f"label_{task}"].dtype == torch.float32
        assert batch[f"mask_{task}"].dtype == torch.bool
    val = next(iter(dm.val_dataloader()))
    # first-position selection: the sdr mask is exactly page_position == 1
    assert torch.equal(val["mask_sdr"], val["page_position"] == 1)
    # conflict filtering: weight 0 exactly where the user purchased and did not swipe down
    columns = dm.load_columns()
    bought = columns["label_cvr"].bool()
    assert torch.equal(columns["weight_sdr"] == 0, bought & (columns["label_sdr"] == 0))
    assert torch.equal(columns["label_vtr"].bool(), columns["label_vtr"] > 0)
    total = sum(len(dm.splits[s]) for s in ("train", "val", "test"))
    assert total == columns["label_cvr"].numel()


def test_split_keeps_visits_whole_and_is_seeded():
    visit = torch.arange(10_000).repeat_interleave(3)
    code = split_of_visit(visit, 0.1, 0.2, seed=0)
    assert (code.view(-1, 3) == code.view(-1, 3)[:, :1]).all()
    share = torch.bincount(code, minlength=3).double() / code.numel()
    assert abs(share[1] - 0.1) < 0.02 and abs(share[2] - 0.2) < 0.02
    assert not torch.equal(code, split_of_visit(visit, 0.1, 0.2, seed=1))


def test_unknown_label_plugin_and_missing_logs(tmp_path, eshop_store):
    with pytest.raises(Exception, match="nope"):
        EShopDataModule(str(eshop_store), labels={"cvr": "nope"})
    with pytest.raises(EshopSchemaError, match="manifest"):
        _ = EShopDataModule(str(tmp_path)).feature_sizes


@pytest.mark.parametrize(
    "setting", [{"batch_size": 0}, {"eval_batch_size": 0}, {"num_workers": -1}], ids=lambda setting: next(iter(setting))
)
def test_non_positive_sizes_are_refused_naming_the_option(eshop_store, setting):
    with pytest.raises(ConfigError, match=rf"^EShopDataModule: --data\.{next(iter(setting))} must"):
        EShopDataModule(str(eshop_store), **setting)
