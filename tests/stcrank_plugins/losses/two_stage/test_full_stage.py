import math

import pytest
import torch

from stcrank import registry
from stcrank_plugins.losses.two_stage.full_stage import FSLambdaLoss, FSRankNetLoss

from .helpers import RELEVANCE, stacked, with_padding

LN2 = math.log(2)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_fs_ranknet_hand_value():
    # Levels 3, 2, 1, 0. Tower 1 (1, 0, 0, 0): top vs 3 (softplus(-1) each), rank_neg vs 2 and coarse vs 1 at 0.
    relevance, mask = torch.tensor([RELEVANCE], dtype=torch.float64), torch.ones(1, 4, dtype=torch.bool)
    scores = stacked([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    loss = FSRankNetLoss()(scores, relevance, mask)
    assert loss.item() == pytest.approx(softplus(-1) + 2 * LN2 + 3 * LN2)  # 3.778998
    loss.backward()
    assert (scores.grad[0, :, 0] < 0).all() and (scores.grad[0, :, 3] > 0).all()  # top up, prerank_neg down


def test_fs_ranknet_is_blind_to_order_inside_the_top_block():
    relevance = torch.tensor([[30.0, 21.0, 7.0]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    one = FSRankNetLoss()(stacked([1.0, 2.0, 0.0], [0.0, 0.0, 0.0]), relevance, mask)
    two = FSRankNetLoss()(stacked([2.0, 1.0, 0.0], [0.0, 0.0, 0.0]), relevance, mask)
    assert one.item() == pytest.approx(two.item())


def lambda_pair(top_n: int, mu: float) -> float:
    # Relevance 2, 1 at positions 1, 2 (equal scores: column order). IDCG = 2 + 1/log2 3.
    idcg = 2 + 1 / math.log2(3)
    gain_gap = (2 - 1) / idcg
    u = 1 - 1 / math.log2(3)
    v = abs(1 - (1 / math.log2(3) if top_n >= 2 else 0.0))
    return gain_gap * ((1 - mu) * u + mu * v) * LN2


def test_fs_lambdaloss_hand_value():
    relevance, mask = torch.tensor([[2.0, 1.0]], dtype=torch.float64), torch.ones(1, 2, dtype=torch.bool)
    scores = stacked([0.0, 0.0], [0.0, 0.0])
    loss = FSLambdaLoss(top_n=30, smooth_fraction=0.8)(scores, relevance, mask)
    assert loss.item() == pytest.approx(2 * lambda_pair(30, 0.8))  # 0.194473: both towers
    cut = FSLambdaLoss(top_n=1, smooth_fraction=0.8)(stacked([0.0, 0.0], [0.0, 0.0]), relevance, mask)
    assert cut.item() == pytest.approx(2 * lambda_pair(1, 0.8))
    loss.backward()
    assert (scores.grad[0, :, 0] < 0).all() and (scores.grad[0, :, 1] > 0).all()


def test_fs_lambdaloss_weights_swaps_near_the_top_more():
    relevance = torch.tensor([[3.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    top_swapped = FSLambdaLoss()(stacked([2.0, 3.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]), relevance, mask)
    bottom_swapped = FSLambdaLoss()(stacked([3.0, 2.0, 0.0, 1.0], [3.0, 2.0, 1.0, 0.0]), relevance, mask)
    assert top_swapped.item() > bottom_swapped.item()


@pytest.mark.parametrize("loss_fn", [FSRankNetLoss(), FSLambdaLoss()])
def test_padding_is_ignored(loss_fn):
    relevance, mask = torch.tensor([RELEVANCE], dtype=torch.float64), torch.ones(1, 4, dtype=torch.bool)
    scores = stacked([1.0, 0.5, 0.2, -1.0], [0.3, 0.0, 2.0, 1.0])
    padded, padded_relevance, padded_mask = with_padding(scores, relevance, mask)
    loss = loss_fn(padded, padded_relevance, padded_mask)
    assert loss.item() == pytest.approx(loss_fn(scores, relevance, mask).item())
    loss.backward()
    assert padded.grad[..., 4:].abs().sum().item() == 0.0


def test_entry_points():
    assert isinstance(registry.build("losses", "fs_ranknet"), FSRankNetLoss)
    assert isinstance(registry.build("losses", "fs_lambdaloss"), FSLambdaLoss)
    with pytest.raises(ValueError, match="smooth_fraction"):
        FSLambdaLoss(smooth_fraction=1.5)
