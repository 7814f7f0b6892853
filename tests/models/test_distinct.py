import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stcrank.models.distinct import distinct_rows, per_distinct_row


def _items(rows, ids, seed=0):
    # Item features that are a function of the item id (as in RecFlow), the id first.
    generator = torch.Generator().manual_seed(seed)
    video = torch.randint(0, ids, (rows,), generator=generator)
    return torch.stack([video, video % 7, video % 5 + 1, video // 3, video * 0], dim=1)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(0, 300), ids=st.integers(1, 50), seed=st.integers(0, 10))
def test_function_of_every_row_once_per_distinct_row(rows, ids, seed):
    items = _items(rows, ids, seed).view(-1, 1, 5)
    calls = []

    def function(x):
        calls.append(len(x))
        return torch.stack([x.sum(1).double(), x[:, 0].double() * 0.5], dim=1)

    out = per_distinct_row(function, items)
    assert out.shape == (rows, 1, 2)
    torch.testing.assert_close(out, function(items.view(-1, 5)).view(rows, 1, 2), rtol=0, atol=0)
    merged = distinct_rows(items.view(-1, 5))
    if merged is not None:
        distinct, inverse = merged
        assert torch.equal(distinct[inverse], items.view(-1, 5))
        assert len(distinct) == len(torch.unique(items.view(-1, 5), dim=0)) == calls[0]


def test_an_id_with_two_feature_rows_is_never_merged():
    items = _items(100, 10)
    items[7, 1] += 1  # the same video id with another author
    assert distinct_rows(items) is None
    function = lambda x: x.double().sum(1)  # noqa: E731
    torch.testing.assert_close(per_distinct_row(function, items), function(items))


def test_ids_beyond_int32_and_few_repeats_are_kept_as_they_are():
    items = _items(100, 10)
    items[::2, 0] += 1 << 32  # equal to their neighbours once cut to int32, different rows
    assert distinct_rows(items) is None
    assert distinct_rows(torch.arange(20).view(10, 2)) is None  # every row distinct: nothing to save
    assert distinct_rows(torch.zeros(100, 3, dtype=torch.long))[0].shape == (1, 3)  # padding rows merge
