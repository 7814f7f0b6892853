import torch

from stcrank.testing import check_plugin
from stcrank_plugins.ensembles.multiplicative import MultiplicativeEnsemble


def test_weighted_product_by_hand():
    ensemble = MultiplicativeEnsemble({"cvr": 1.0, "vtr": 2.0})
    predictions = {"cvr": torch.tensor([0.5, 0.2]), "vtr": torch.tensor([0.5, 1.0])}
    assert torch.allclose(ensemble(predictions), torch.tensor([0.125, 0.2]))


def test_zero_probability_with_zero_weight_is_finite():
    ensemble = MultiplicativeEnsemble({"cvr": 1.0, "vtr": 0.0})
    value = ensemble({"cvr": torch.tensor([0.3]), "vtr": torch.tensor([0.0])})
    assert torch.allclose(value, torch.tensor([0.3]))


def test_contract():
    check_plugin("ensembles", "multiplicative")
