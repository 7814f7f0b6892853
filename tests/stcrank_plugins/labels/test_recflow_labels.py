import pytest
import torch

from stcrank import registry
from stcrank.plugins import LabelDefinition
from stcrank_plugins.labels.recflow import EffectiveViewLabel


def test_registered_under_its_entry_point_name():
    label = registry.build("labels", "effective_view")
    assert isinstance(label, EffectiveViewLabel) and isinstance(label, LabelDefinition)
    assert label.task == "effective_view" and label.required_columns == ("effective_view",)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.float32])
def test_effective_view_is_the_target_for_every_sample(dtype):
    values = torch.tensor([0, 1, 1, 0, 1], dtype=dtype)
    out = EffectiveViewLabel()({"effective_view": values, "like": torch.zeros(5)})
    assert out.target.dtype == torch.float32 and out.target.tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]
    assert out.mask.dtype == torch.bool and bool(out.mask.all())
    assert torch.equal(out.weight, torch.ones(5))


def test_rejects_nan_non_binary_and_missing_columns():
    label = EffectiveViewLabel()
    with pytest.raises(ValueError, match=r"effective_view.*NaN"):
        label({"effective_view": torch.tensor([0.0, float("nan")])})
    with pytest.raises(ValueError, match=r"values \[2\.0\] other than 0 and 1"):
        label({"effective_view": torch.tensor([0, 2, 1])})
    with pytest.raises(ValueError, match="1-D"):
        label({"effective_view": torch.zeros(2, 2)})
    with pytest.raises(KeyError, match="effective_view"):
        label({"long_view": torch.zeros(2)})


def test_empty_batches():
    out = EffectiveViewLabel()({"effective_view": torch.zeros(0, dtype=torch.int8)})
    assert out.target.shape == out.mask.shape == out.weight.shape == (0,)
