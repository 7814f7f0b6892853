import math

import pytest
import torch
from torch.nn import functional as F

from stcrank.models.esmm import DEFAULT_PRODUCTS, ESMM, log1mexp, product_log_prob, product_logit
from stcrank.tasks.multitask import masked_task_loss


def sizes():
    names = ["user_id", "user_segment", "user_activity_bucket", "user_purchase_bucket", "user_price_bucket"]
    names += ["item_id", "item_category", "item_brand", "item_price_bucket"]
    return {name: 7 for name in names}


def batch(n=5):
    g = torch.Generator().manual_seed(0)
    out = {name: torch.randint(1, 7, (n,), generator=g) for name in sizes()}
    out["item_price"] = torch.rand(n, generator=g) * 50
    return out


def test_product_of_two_factors_matches_a_hand_computed_value():
    # sigmoid(0) = 0.5, sigmoid(ln 3) = 0.75: p = 0.375, logit = ln(0.375 / 0.625), BCE(y=1) = -ln 0.375.
    log_p = product_log_prob([torch.tensor([0.0]), torch.tensor([math.log(3.0)])])
    assert log_p.item() == pytest.approx(math.log(0.375), rel=1e-6)
    logit = product_logit(log_p)
    assert logit.item() == pytest.approx(math.log(0.375 / 0.625), rel=1e-6)
    loss = masked_task_loss(logit, torch.tensor([1.0]), torch.tensor([True]), torch.tensor([1.0]))
    assert loss.item() == pytest.approx(-math.log(0.375), rel=1e-6)
    loss0 = masked_task_loss(logit, torch.tensor([0.0]), torch.tensor([True]), torch.tensor([1.0]))
    assert loss0.item() == pytest.approx(-math.log(0.625), rel=1e-6)


def test_product_bce_matches_a_float64_reference_across_extremes():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 2000, generator=g, dtype=torch.float64) * 12  # from p ~ 1e-5 to p ~ 1 - 1e-5 per factor
    y = (torch.rand(2000, generator=g) < 0.5).double()
    p64 = torch.sigmoid(z).prod(0)
    reference = -(y * torch.log(p64) + (1 - y) * torch.log1p(-p64))
    logit = product_logit(product_log_prob(list(z.float())))
    bce = F.binary_cross_entropy_with_logits(logit, y.float(), reduction="none")
    assert torch.isfinite(bce).all()
    # float32 keeps ~7 digits of each term; the reference is finite wherever float64 can tell p from 1.
    finite = torch.isfinite(reference) & (p64 < 1 - 1e-6)
    torch.testing.assert_close(bce.double()[finite], reference[finite], rtol=1e-4, atol=1e-5)


def test_log1mexp_is_accurate_near_zero_and_far_below():
    x = torch.tensor([-1e-10, -1e-3, -0.5, -5.0, -60.0], dtype=torch.float64)
    torch.testing.assert_close(log1mexp(x), torch.log(-torch.expm1(x)))
    assert log1mexp(torch.tensor([-1e-30])).item() == pytest.approx(math.log(1e-30), rel=1e-6)


def test_product_logit_stays_finite_when_the_product_rounds_to_one():
    logit = product_logit(product_log_prob([torch.tensor([200.0]), torch.tensor([200.0])]))
    assert torch.isfinite(logit).all() and logit.item() > 10


def test_network_products_are_the_products_of_its_factors():
    net = ESMM(sizes(), embedding_dim=4, expert_hidden=[8], tower_hidden=[4], num_experts=2)
    b = batch()
    p = net.probabilities(b)
    assert set(p) == {"ctr", "sdr_star", "cvr_f_star", "cvr_detail", "ctr_sdr", "ctr_sdr_cvrf", "cvr_e"}
    torch.testing.assert_close(p["ctr_sdr_cvrf"], p["ctr"] * p["sdr_star"] * p["cvr_f_star"])
    torch.testing.assert_close(p["cvr_e"], p["ctr"] * p["cvr_detail"])
    logits = net(b)
    assert list(logits) == list(DEFAULT_PRODUCTS)
    torch.testing.assert_close(torch.sigmoid(logits["ctr_sdr"]), p["ctr_sdr"])
    grid = {k: v.view(5, 1).expand(5, 3) for k, v in b.items()}
    assert net(grid)["cvr_e"].shape == (5, 3)


def test_bad_products_and_missing_columns_are_reported():
    with pytest.raises(ValueError, match="at least one factor"):
        ESMM(sizes(), products={"x": []})
    with pytest.raises(ValueError, match="share a factor's name"):
        ESMM(sizes(), products={"ctr": ["ctr", "other"]})
    net = ESMM(sizes(), embedding_dim=4, expert_hidden=[8], tower_hidden=[4], num_experts=1)
    b = batch()
    del b["user_segment"]
    with pytest.raises(KeyError, match="user_segment"):
        net(b)


def test_user_columns_expanded_over_candidates_score_like_dense_columns():
    # The simulator's homepage layout: user columns expanded over the candidates (read once per request).
    torch.manual_seed(0)
    net = ESMM(sizes(), embedding_dim=4, num_experts=2, expert_hidden=[8, 6], tower_hidden=[4])
    dense = {name: values.view(3, 4) for name, values in batch(12).items()}
    expanded = dict(dense)
    for name in ("user_id", "user_segment", "user_activity_bucket", "user_purchase_bucket", "user_price_bucket"):
        dense[name] = dense[name][:, :1].expand(3, 4).contiguous()
        expanded[name] = dense[name][:, :1].expand(3, 4)
    got, want = net(expanded), net(dense)
    for name in DEFAULT_PRODUCTS:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4)
