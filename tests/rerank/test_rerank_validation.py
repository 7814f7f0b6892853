import pytest
import torch

from stcrank.rerank import check_batch, check_context, check_order, check_scores


def test_scores_are_promoted_to_a_common_float_dtype():
    value, continue_prob = check_scores(torch.rand(2, 3, dtype=torch.float16), torch.rand(2, 3, dtype=torch.float64))
    assert value.dtype == continue_prob.dtype == torch.float64
    value, _ = check_scores(torch.rand(2, 3, dtype=torch.bfloat16), torch.rand(2, 3, dtype=torch.bfloat16))
    assert value.dtype == torch.float32


@pytest.mark.parametrize(
    ("where", "bad", "message"),
    [
        ("value", float("nan"), r"value contains NaN at request 1, candidate 2"),
        ("value", float("inf"), r"value must be finite; found an infinity at request 1, candidate 2"),
        ("continue_prob", float("nan"), r"continue_prob contains NaN at request 1, candidate 2"),
        ("continue_prob", 1.5, r"continue_prob must lie in \[0, 1\]; found 1.5 at request 1, candidate 2"),
        ("continue_prob", -0.5, r"continue_prob must lie in \[0, 1\]; found -0.5"),
    ],
)
def test_bad_values_are_named(where, bad, message):
    scores = {"value": torch.rand(3, 4), "continue_prob": torch.rand(3, 4)}
    scores[where][1, 2] = bad
    with pytest.raises(ValueError, match=message):
        check_scores(scores["value"], scores["continue_prob"])


def test_integer_scores_are_rejected():
    with pytest.raises(TypeError, match="value must be a floating-point tensor"):
        check_scores(torch.ones(2, 2, dtype=torch.long), torch.rand(2, 2))


def test_batch_shapes_and_k():
    check_batch(torch.rand(2, 3), torch.rand(2, 3), 3)
    with pytest.raises(ValueError, match=r"\[R, n\]"):
        check_batch(torch.rand(2, 3), torch.rand(2, 4), 1)
    with pytest.raises(ValueError, match=r"\[R, n\]"):
        check_batch(torch.rand(3), torch.rand(3), 1)
    with pytest.raises(ValueError, match=r"k must be in \[1, n=3\], got 4"):
        check_batch(torch.rand(2, 3), torch.rand(2, 3), 4)
    with pytest.raises(ValueError, match=r"got 0"):
        check_batch(torch.rand(2, 3), torch.rand(2, 3), 0)
    with pytest.raises(TypeError, match="k must be an int"):
        check_batch(torch.rand(2, 3), torch.rand(2, 3), 2.0)


def test_order_checks():
    check_order(torch.tensor([[0, 2]]), 1, 3)
    with pytest.raises(ValueError, match="outside"):
        check_order(torch.tensor([[0, 3]]), 1, 3, name="reranked")
    with pytest.raises(TypeError, match="reranked must be an integer tensor"):
        check_order(torch.tensor([[True]]), 1, 3, name="reranked")


def test_context_checks():
    shape = torch.Size([2, 3])
    assert set(check_context(("category",), {"category": torch.zeros(2, 3), "other": 1}, shape)) == {"category"}
    with pytest.raises(ValueError, match=r"missing \['category'\]"):
        check_context(("category",), None, shape)
    with pytest.raises(ValueError, match="context 'category' must have"):
        check_context(("category",), {"category": torch.zeros(2, 4)}, shape)
