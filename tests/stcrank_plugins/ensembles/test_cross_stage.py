import torch

from stcrank.testing import check_plugin
from stcrank_plugins.ensembles.cross_stage import CrossStageLookaheadEnsemble


def test_score_is_direct_plus_lookahead_product():
    predictions = {
        "cvr_e": torch.tensor([0.01, 0.02]),
        "ctr": torch.tensor([0.1, 0.05]),
        "sdr_star": torch.tensor([0.5, 0.4]),
        "cvr_f_star": torch.tensor([0.2, 0.1]),
    }
    # 0.01 + 0.1*0.5*0.2 = 0.02 ; 0.02 + 0.05*0.4*0.1 = 0.022
    assert torch.allclose(CrossStageLookaheadEnsemble()(predictions), torch.tensor([0.02, 0.022]))
    pointwise = CrossStageLookaheadEnsemble(lookahead_weight=0.0)(predictions)
    assert torch.allclose(pointwise, predictions["cvr_e"])


def test_contract():
    check_plugin("ensembles", "cross_stage")
