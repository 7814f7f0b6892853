import pytest
import torch

from stcrank import registry
from stcrank.testing import check_plugin
from stcrank_plugins.ensembles.linear import LinearEnsemble


def test_weighted_sum_by_hand():
    ensemble = LinearEnsemble({"vtr": 1.0, "cvr": 3.0, "sdr": 0.5})
    predictions = {"vtr": torch.tensor([0.2, 0.6]), "cvr": torch.tensor([0.1, 0.0]), "sdr": torch.tensor([0.8, 0.4])}
    # 0.2 + 0.3 + 0.4 = 0.9 ; 0.6 + 0 + 0.2 = 0.8
    assert torch.allclose(ensemble(predictions), torch.tensor([0.9, 0.8]))


def test_missing_prediction_is_named():
    with pytest.raises(KeyError, match="missing \\['sdr'\\]"):
        LinearEnsemble()({"vtr": torch.zeros(2), "cvr": torch.zeros(2)})


def test_contract_and_registry():
    check_plugin("ensembles", "linear")
    assert registry.load("ensembles", "linear") is LinearEnsemble
    with pytest.raises(ValueError, match="at least one"):
        LinearEnsemble({})
