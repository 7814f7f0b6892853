import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcrank.rerank import brute_force_rerank, continue_products, sequence_value


def test_hand_computed_value():
    value = torch.tensor([[1.0, 2.0, 3.0]])
    continue_prob = torch.tensor([[0.5, 0.2, 1.0]])
    order = torch.tensor([[2, 0, 1]])
    # slots seen with 1, s_2 = 1.0, s_2 * s_0 = 0.5
    assert torch.allclose(continue_products(continue_prob, order), torch.tensor([[1.0, 1.0, 0.5]]))
    assert torch.allclose(sequence_value(value, continue_prob, order), torch.tensor([3.0 + 1.0 + 0.5 * 2.0]))


def test_exit_hides_the_rest_of_the_list():
    value = torch.tensor([[5.0, 7.0, 11.0]])
    continue_prob = torch.tensor([[0.0, 0.3, 0.9]])
    assert sequence_value(value, continue_prob, torch.tensor([[0, 1, 2]])).item() == 5.0
    assert sequence_value(value, continue_prob, torch.tensor([[1, 0, 2]])).item() == pytest.approx(7.0 + 0.3 * 5.0)


def test_single_slot_is_the_item_value():
    value = torch.rand(4, 6)
    order = torch.tensor([[3], [0], [5], [2]])
    expected = value.gather(1, order).squeeze(1)
    assert torch.equal(sequence_value(value, torch.rand(4, 6), order), expected)


def test_batch_matches_a_loop_over_requests():
    generator = torch.Generator().manual_seed(3)
    value = torch.rand(20, 9, generator=generator, dtype=torch.float64)
    continue_prob = torch.rand(20, 9, generator=generator, dtype=torch.float64)
    order = torch.stack([torch.randperm(9, generator=generator)[:5] for _ in range(20)])
    got = sequence_value(value, continue_prob, order)
    for r in range(20):
        total, seen = 0.0, 1.0
        for j in order[r].tolist():
            total += seen * value[r, j].item()
            seen *= continue_prob[r, j].item()
        assert got[r].item() == pytest.approx(total, rel=1e-12)
    assert got.dtype == torch.float64


def test_errors_name_the_problem():
    value, continue_prob = torch.rand(2, 4), torch.rand(2, 4)
    with pytest.raises(ValueError, match="value and continue_prob"):
        sequence_value(value, torch.rand(2, 5), torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="outside"):
        sequence_value(value, continue_prob, torch.tensor([[0, 4], [1, 2]]))
    with pytest.raises(ValueError, match="outside"):
        sequence_value(value, continue_prob, torch.tensor([[0, -1], [1, 2]]))
    with pytest.raises(TypeError, match="integer"):
        sequence_value(value, continue_prob, torch.tensor([[0.0], [1.0]]))
    with pytest.raises(ValueError, match=r"R=2"):
        sequence_value(value, continue_prob, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=r"\[R, n\]"):
        continue_products(torch.rand(4), torch.tensor([[0]]))


PROPS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def instance_and_order(draw, repeat: bool):
    """An instance ``(value, continue_prob)`` ``[1, n]`` and one list of length ``k``, repeating an item or not."""
    n = draw(st.integers(2, 6))
    values = draw(st.lists(st.floats(-3, 3, width=32), min_size=n, max_size=n))
    continues = draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n))
    if repeat:
        k = draw(st.integers(2, n + 2))
        row = draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k).filter(lambda r: len(set(r)) < len(r)))
    else:
        k = draw(st.integers(1, n))
        row = draw(st.permutations(range(n)))[:k]
    value = torch.tensor([values], dtype=torch.float64)
    return value, torch.tensor([continues], dtype=torch.float64), torch.tensor([row])


@PROPS
@given(instance_and_order(repeat=True))
def test_a_list_repeating_an_item_is_refused(case):
    value, continue_prob, order = case
    with pytest.raises(ValueError, match=r"order repeats candidate \d+ in request 0"):
        sequence_value(value, continue_prob, order)
    with pytest.raises(ValueError, match="repeats candidate"):
        continue_products(continue_prob, order)


@PROPS
@given(instance_and_order(repeat=False))
def test_no_real_list_beats_the_exact_optimum(case):
    value, continue_prob, order = case
    best = brute_force_rerank(value, continue_prob, order.shape[1]).value
    assert sequence_value(value, continue_prob, order).item() <= best.item() + 1e-9


def test_repeating_the_best_item_no_longer_beats_the_optimum():
    value, continue_prob = torch.tensor([[1.0, 5.0]]), torch.tensor([[1.0, 1.0]])
    assert brute_force_rerank(value, continue_prob, 2).value.item() == 6.0
    with pytest.raises(ValueError, match="repeats candidate 1"):
        sequence_value(value, continue_prob, torch.tensor([[1, 1]]))  # would be worth 10


@pytest.mark.parametrize(
    ("continue_prob", "message"),
    [
        ([[2.0, 0.5]], r"continue_prob must lie in \[0, 1\]; found 2.0 at request 0, candidate 0"),
        ([[0.5, -0.1]], r"continue_prob must lie in \[0, 1\]; found -0.1"),
        ([[0.5, float("nan")]], "continue_prob contains NaN at request 0, candidate 1"),
    ],
)
def test_continue_prob_outside_the_unit_interval_is_refused(continue_prob, message):
    with pytest.raises(ValueError, match=message):
        sequence_value(torch.tensor([[1.0, 2.0]]), torch.tensor(continue_prob), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=message):
        continue_products(torch.tensor(continue_prob), torch.tensor([[0, 1]]))


def test_values_must_be_finite_and_tensors_floating():
    with pytest.raises(ValueError, match="value contains NaN"):
        sequence_value(torch.tensor([[float("nan"), 1.0]]), torch.ones(1, 2), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="value must be finite"):
        sequence_value(torch.tensor([[float("inf"), 1.0]]), torch.ones(1, 2), torch.tensor([[0, 1]]))
    with pytest.raises(TypeError, match="continue_prob must be a floating-point tensor"):
        sequence_value(torch.ones(1, 2), torch.ones(1, 2, dtype=torch.long), torch.tensor([[0, 1]]))


def test_empty_lists_are_worth_zero_and_no_requests_give_nothing():
    no_items = torch.zeros(2, 0, dtype=torch.long)
    assert torch.equal(sequence_value(torch.rand(2, 3), torch.rand(2, 3), no_items), torch.zeros(2))
    assert sequence_value(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 2, dtype=torch.long)).shape == (0,)


def test_the_value_is_differentiable_in_its_inputs():
    value = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    continue_prob = torch.tensor([[0.5, 0.2, 1.0]], requires_grad=True)
    sequence_value(value, continue_prob, torch.tensor([[2, 0, 1]])).sum().backward()
    assert torch.allclose(value.grad, torch.tensor([[1.0, 0.5, 1.0]]))  # dV/dv_i = p_i
    # dV/ds_0 = s_2 v_1, dV/ds_1 = 0 (last slot), dV/ds_2 = v_0 + s_0 v_1
    assert torch.allclose(continue_prob.grad, torch.tensor([[2.0, 0.0, 1.0 + 0.5 * 2.0]]))
