import pytest
import torch

from stcrank import registry
from stcrank_plugins.labels.eshop import PurchaseLabel, SwipeDownLabel, WatchThresholdLabel

# Hand-made session: two requests of three views each.
#             view:  0     1      2      3     4      5
PAGE_POSITION = torch.tensor([1, 2, 3, 1, 2, 3])
WATCH = torch.tensor([1.0, 3.0, 6.0, 30.0, 25.0, 0.0])
PURCHASE = torch.tensor([False, True, False, False, True, False])
SWIPE = torch.tensor([True, False, True, False, True, False])
COLUMNS = {"page_position": PAGE_POSITION, "watch_time": WATCH, "purchase": PURCHASE, "swipe_down": SWIPE}


def test_entry_points_build_the_labels():
    assert isinstance(registry.build("labels", "cvr"), PurchaseLabel)
    assert isinstance(registry.build("labels", "vtr_threshold", threshold_s=5.0), WatchThresholdLabel)
    assert isinstance(registry.build("labels", "sdr"), SwipeDownLabel)


def test_purchase_label_every_view():
    out = PurchaseLabel()(COLUMNS)
    assert out.target.tolist() == [0, 1, 0, 0, 1, 0]
    assert out.mask.all() and (out.weight == 1).all()


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [(25.0, [0, 0, 0, 1, 0, 0]), (5.0, [0, 0, 1, 1, 1, 0]), (2.0, [0, 1, 1, 1, 1, 0]), (0.5, [1, 1, 1, 1, 1, 0])],
)
def test_watch_threshold_is_strict(threshold, expected):
    out = WatchThresholdLabel(threshold)(COLUMNS)
    assert out.target.tolist() == expected
    assert out.mask.all()


def test_swipe_down_baseline_every_view_unit_weight():
    out = SwipeDownLabel()(COLUMNS)
    assert out.target.tolist() == [1, 0, 1, 0, 1, 0]
    assert out.mask.all() and (out.weight == 1).all()
    assert SwipeDownLabel().required_columns == ("swipe_down",)


def test_swipe_down_first_position_only_masks_other_positions():
    out = SwipeDownLabel(first_position_only=True)(COLUMNS)
    assert out.mask.tolist() == [True, False, False, True, False, False]
    assert (out.weight == 1).all()


def test_swipe_down_conflict_filtering_zero_weights_exit_after_purchase():
    out = SwipeDownLabel(drop_exit_after_purchase=True)(COLUMNS)
    # view 1: purchased and did not swipe -> 0; view 4: purchased but swiped -> kept
    assert out.weight.tolist() == [1, 0, 1, 1, 1, 1]
    assert out.mask.all()


def test_swipe_down_both_switches_are_independent():
    out = SwipeDownLabel(first_position_only=True, drop_exit_after_purchase=True)(COLUMNS)
    assert out.mask.tolist() == [True, False, False, True, False, False]
    assert out.weight.tolist() == [1, 0, 1, 1, 1, 1]


def test_missing_column_is_named():
    with pytest.raises(KeyError, match="page_position"):
        SwipeDownLabel(first_position_only=True)({"swipe_down": SWIPE})


def test_bad_values_are_reported():
    with pytest.raises(ValueError, match="swipe_down"):
        SwipeDownLabel()({"swipe_down": torch.tensor([0, 2])})
    with pytest.raises(ValueError, match="NaN"):
        WatchThresholdLabel()({"watch_time": torch.tensor([1.0, float("nan")])})
    with pytest.raises(ValueError, match="threshold_s"):
        WatchThresholdLabel(0.0)
