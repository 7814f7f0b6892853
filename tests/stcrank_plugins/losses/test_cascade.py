"""Tests of the FS-LTR and PositiveRank cascade loss plugins."""

from __future__ import annotations

import math

import pytest
import torch

from stcrank import registry
from stcrank_plugins.losses.cascade import FSLTRLoss, PositiveRankLoss


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_pairs_form_hand_value():
    # Priorities 6 5 0 0, scores 3 1 2 0. Pairs (i above j): 6>5: d=2; 6>0: d=1, 3; 5>0: d=-1, 1.
    scores = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    target = torch.tensor([[6.0, 5.0, 0.0, 0.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    # (0.126928 + 0.313262 + 0.048587 + 1.313262 + 0.313262) / 5 = 0.423060
    assert FSLTRLoss()(scores, target, mask).item() == pytest.approx(0.4230600850, abs=1e-6)
    # Level weight 0 on priority 5 removes its pairs from the numerator, not from the denominator (RecFlow's
    # coarse form): (0.126928 + 0.313262 + 0.048587) / 5 = 0.097755.
    weighted = FSLTRLoss(priority_weights={5: 0.0})(scores, target, mask)
    assert weighted.item() == pytest.approx(0.0977554100, abs=1e-6)


def test_padding_never_pairs_and_equal_priorities_never_pair():
    scores = torch.tensor([[3.0, 1.0, 2.0, 0.0, float("nan"), -50.0]], requires_grad=True)
    target = torch.tensor([[6.0, 5.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True, False, False]])
    loss = FSLTRLoss()(scores, target, mask)
    assert loss.item() == pytest.approx(0.4230600850, abs=1e-6)  # same as without the two padded items
    loss.backward()
    assert torch.isfinite(scores.grad).all() and scores.grad[0, 4:].abs().sum().item() == 0.0
    same = FSLTRLoss()(torch.tensor([[1.0, 2.0]]), torch.tensor([[5.0, 5.0]]), torch.ones(1, 2, dtype=torch.bool))
    assert same.item() == 0.0


def test_batch_without_pairs_is_zero_not_nan():
    scores = torch.randn(3, 4, requires_grad=True)
    target = torch.tensor([[0.0] * 4, [3.0] * 4, [6.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True] * 4, [True] * 4, [True, False, False, False]])
    for loss_fn in (FSLTRLoss(), FSLTRLoss(normalize="group"), PositiveRankLoss()):
        loss = loss_fn(scores, target, mask)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(scores.grad).all()


def test_pairs_form_matches_brute_force_loop():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 9, generator=gen)
    target = torch.randint(0, 7, (5, 9), generator=gen).float()
    mask = torch.rand(5, 9, generator=gen) < 0.8
    weights = {6: 1.0, 5: 0.5, 2: 0.0}
    num = den = 0.0
    for b in range(5):
        for i in range(9):
            for j in range(9):
                if mask[b, i] and mask[b, j] and target[b, i] > target[b, j]:
                    num += weights.get(int(target[b, i]), 1.0) * softplus(-(scores[b, i] - scores[b, j]).item())
                    den += 1
    assert FSLTRLoss(priority_weights=weights)(scores, target, mask).item() == pytest.approx(num / den, abs=1e-5)


# One code per group of RecFlow's rank-stage FS-LTR: the codes only name groups, negatives_of gives the pairs.
RANK_NEG, RERANK_NEG, RANK_POS, RERANK_POS, REALSHOW, CLICK = range(6)
RANK_STAGE = {
    "negatives_of": {
        CLICK: [REALSHOW, RERANK_POS, RERANK_NEG, RANK_POS, RANK_NEG],
        REALSHOW: [RERANK_POS, RERANK_NEG, RANK_POS, RANK_NEG],
        RERANK_POS: [RERANK_NEG, RANK_NEG],
        RANK_POS: [RERANK_NEG, RANK_NEG],
    },
    "priority_weights": {CLICK: 1.0, REALSHOW: 0.5, RERANK_POS: 0.05, RANK_POS: 0.05},
    "normalize": "group",
}


def test_rank_stage_group_config_hand_value():
    # One slot per group: click 2.0, realshow 1.0, rerank_pos 0.5, rerank_neg 0.0, rank_pos 1.5, rank_neg -1.0.
    scores = torch.tensor([[2.0, 1.0, 0.5, 0.0, 1.5, -1.0]])
    target = torch.tensor([[CLICK, REALSHOW, RERANK_POS, RERANK_NEG, RANK_POS, RANK_NEG]], dtype=torch.float32)
    mask = torch.ones(1, 6, dtype=torch.bool)
    # L_click      = (sp(-1) + sp(-1.5) + sp(-2) + sp(-0.5) + sp(-3)) / 5 = 0.232853
    # L_realshow   = (sp(-0.5) + sp(-1) + sp(0.5) + sp(-2)) / 4       = 0.472086
    # L_rerank_pos = (sp(-0.5) + sp(-1.5)) / 2                         = 0.337745
    # L_rank_pos   = (sp(-1.5) + sp(-2.5)) / 2                         = 0.140152
    # L = 1 * 0.232853 + 0.5 * 0.472086 + 0.05 * 0.337745 + 0.05 * 0.140152 = 0.492791
    loss = FSLTRLoss(**RANK_STAGE)(scores, target, mask)
    assert loss.item() == pytest.approx(0.4927912527, abs=1e-6)


def reference_rank_stage(scores: torch.Tensor, slots: dict[str, slice], masks: dict[str, torch.Tensor]) -> float:
    """Transcription of RecFlow's rank-stage group losses with every negative slot real (no padding)."""

    def group(pos: str, negs: list[str]) -> float:
        s_pos = scores[:, slots[pos]]
        s_neg = torch.cat([scores[:, slots[n]] for n in negs], dim=1)
        terms = torch.nn.functional.softplus(-(s_pos.unsqueeze(2) - s_neg.unsqueeze(1)))  # [B, P, N]
        m = masks[pos].unsqueeze(2).float()
        return ((terms * m).sum() / (s_neg.shape[1] * m.sum())).item()

    return (
        1.0 * group("click", ["realshow", "rerank_pos", "rerank_neg", "rank_pos", "rank_neg"])
        + 0.5 * group("realshow", ["rerank_pos", "rerank_neg", "rank_pos", "rank_neg"])
        + 0.05 * group("rerank_pos", ["rerank_neg", "rank_neg"])
        + 0.05 * group("rank_pos", ["rerank_neg", "rank_neg"])
    )


def test_rank_stage_group_config_with_missing_items_matches_masked_formula():
    gen = torch.Generator().manual_seed(1)
    sizes = {"click": 2, "realshow": 3, "rerank_pos": 4, "rerank_neg": 4, "rank_pos": 4, "rank_neg": 4}
    codes = {"click": CLICK, "realshow": REALSHOW, "rerank_pos": RERANK_POS, "rerank_neg": RERANK_NEG}
    codes |= {"rank_pos": RANK_POS, "rank_neg": RANK_NEG}
    slots, start = {}, 0
    for name, size in sizes.items():
        slots[name] = slice(start, start + size)
        start += size
    batch = 8
    scores = torch.randn(batch, start, generator=gen)
    target = torch.cat([torch.full((batch, n), float(codes[name])) for name, n in sizes.items()], dim=1)
    # Every group is partly missing; a missing item neither outranks nor is outranked by anything.
    masks = {name: torch.rand(batch, n, generator=gen) < 0.6 for name, n in sizes.items()}
    masks["click"][0] = True  # at least one click in the batch
    mask = torch.cat([masks[name] for name in sizes], dim=1)
    expected = reference_rank_stage_masked(scores, slots, masks)
    assert FSLTRLoss(**RANK_STAGE)(scores, target, mask).item() == pytest.approx(expected, abs=1e-5)


def reference_rank_stage_masked(scores, slots, masks) -> float:
    """The reference group formula with masked negatives: each group sums its real pairs over their count."""

    def group(pos: str, negs: list[str]) -> float:
        s_pos, m_pos = scores[:, slots[pos]], masks[pos].float()
        s_neg = torch.cat([scores[:, slots[n]] for n in negs], dim=1)
        m_neg = torch.cat([masks[n] for n in negs], dim=1).float()
        terms = torch.nn.functional.softplus(-(s_pos.unsqueeze(2) - s_neg.unsqueeze(1)))
        pair = m_pos.unsqueeze(2) * m_neg.unsqueeze(1)
        return ((terms * pair).sum() / pair.sum()).item()

    return (
        1.0 * group("click", ["realshow", "rerank_pos", "rerank_neg", "rank_pos", "rank_neg"])
        + 0.5 * group("realshow", ["rerank_pos", "rerank_neg", "rank_pos", "rank_neg"])
        + 0.05 * group("rerank_pos", ["rerank_neg", "rank_neg"])
        + 0.05 * group("rank_pos", ["rerank_neg", "rank_neg"])
    )


def test_rank_stage_group_config_equals_recflow_formula_when_slots_are_full():
    gen = torch.Generator().manual_seed(2)
    sizes = {"click": 2, "realshow": 2, "rerank_pos": 3, "rerank_neg": 3, "rank_pos": 3, "rank_neg": 3}
    codes = [CLICK, REALSHOW, RERANK_POS, RERANK_NEG, RANK_POS, RANK_NEG]
    slots, start = {}, 0
    for name, size in sizes.items():
        slots[name] = slice(start, start + size)
        start += size
    scores = torch.randn(5, start, generator=gen)
    target = torch.cat([torch.full((5, n), float(c)) for n, c in zip(sizes.values(), codes, strict=True)], dim=1)
    masks = {name: torch.ones(5, n, dtype=torch.bool) for name, n in sizes.items()}
    expected = reference_rank_stage(scores, slots, masks)  # denominators 46-style: (#negative slots) * #positives
    loss = FSLTRLoss(**RANK_STAGE)(scores, target, torch.ones(5, start, dtype=torch.bool))
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_positive_rank_hand_value():
    # Priorities 6 5 4 0, scores 1 2 0 -1: only the click is ranked, against the three others.
    scores = torch.tensor([[1.0, 2.0, 0.0, -1.0]])
    target = torch.tensor([[6.0, 5.0, 4.0, 0.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    # (softplus(1) + softplus(-1) + softplus(-2)) / 3 = (1.313262 + 0.313262 + 0.126928) / 3 = 0.584484
    assert PositiveRankLoss()(scores, target, mask).item() == pytest.approx(0.5844837954, abs=1e-6)
    # FS-LTR on the same row also ranks 5 above 4 and 0, and 4 above 0, so it differs.
    assert FSLTRLoss()(scores, target, mask).item() != pytest.approx(0.5844837954, abs=1e-3)
    assert PositiveRankLoss(positive_level=5)(scores, target, mask).item() == pytest.approx(
        (softplus(-1) + softplus(-2) + softplus(-3)) / 3, abs=1e-6
    )


def test_bad_config_and_inputs_raise():
    with pytest.raises(ValueError, match="itself"):
        FSLTRLoss(negatives_of={3: [3, 1]})
    with pytest.raises(ValueError, match="normalize"):
        FSLTRLoss(normalize="rows")
    with pytest.raises(ValueError, match="non-negative integer"):
        FSLTRLoss(priority_weights={-1: 1.0})
    mask = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="integer priorities"):
        FSLTRLoss()(torch.zeros(1, 2), torch.tensor([[1.5, 0.0]]), mask)
    with pytest.raises(ValueError, match="non-negative"):
        FSLTRLoss()(torch.zeros(1, 2), torch.tensor([[-1.0, 0.0]]), mask)
    with pytest.raises(ValueError, match="NaN"):
        PositiveRankLoss()(torch.zeros(1, 2), torch.tensor([[float("nan"), 0.0]]), mask)


def test_levels_outside_the_config_never_pair_under_negatives_of():
    loss = FSLTRLoss(negatives_of={6: [0]})
    scores = torch.tensor([[1.0, 0.0, 5.0, 9.0]])
    target = torch.tensor([[6.0, 0.0, 3.0, 12.0]])  # 3 and 12 are in no list
    mask = torch.ones(1, 4, dtype=torch.bool)
    assert loss(scores, target, mask).item() == pytest.approx(softplus(-1), abs=1e-6)


def test_registered_names():
    assert isinstance(registry.build("stcrank.losses", "fs_ltr", normalize="group"), FSLTRLoss)
    assert isinstance(registry.build("stcrank.losses", "positive_rank"), PositiveRankLoss)
