import pytest
import torch

from stcrank.rerank import compact_mask, stable_topk


def reference(x, k):
    values, index = torch.sort(x, dim=1, descending=True, stable=True)
    return values[:, :k], index[:, :k]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_a_stable_sort_whatever_the_ties(dtype):
    generator = torch.Generator().manual_seed(0)
    for levels in (2, 3, 5, 1000):
        x = torch.randint(0, levels, (64, 37), generator=generator).to(dtype)
        x[::5, ::3] = -torch.inf
        for k in (0, 1, 2, 5, 10, 18, 19, 30, 37):
            values, index = stable_topk(x, k)
            ref_values, ref_index = reference(x, k)
            assert torch.equal(index, ref_index), (levels, k)
            assert torch.equal(values, ref_values)


def test_boundary_tie_keeps_the_lowest_indices():
    x = torch.tensor([[1.0, 5.0, 3.0, 5.0, 3.0, 3.0, 0.0, 3.0]])
    values, index = stable_topk(x, 3)
    assert index.tolist() == [[1, 3, 2]]
    assert values.tolist() == [[5.0, 5.0, 3.0]]


def test_signed_zeros_are_equal():
    x = torch.tensor([[-0.0, 0.0, -1.0, -0.0, 0.0, -2.0]])
    assert stable_topk(x, 3)[1].tolist() == [[0, 1, 3]]


def test_errors_and_empty():
    with pytest.raises(ValueError, match=r"\[R, N\]"):
        stable_topk(torch.rand(3), 1)
    with pytest.raises(ValueError, match="k must be"):
        stable_topk(torch.rand(2, 3), 4)
    values, index = stable_topk(torch.rand(0, 5), 2)
    assert values.shape == (0, 2) and index.shape == (0, 2)


def test_compact_mask():
    mask = torch.tensor([[True, False, True, True], [False, False, False, True], [False] * 4])
    assert compact_mask(mask).tolist() == [[0, 2, 3], [3, -1, -1], [-1, -1, -1]]
    assert compact_mask(mask, width=2).tolist() == [[0, 2], [3, -1], [-1, -1]]
    assert compact_mask(mask, width=5).tolist() == [[0, 2, 3, -1, -1], [3, -1, -1, -1, -1], [-1] * 5]
    assert compact_mask(torch.zeros(0, 3, dtype=torch.bool)).shape == (0, 0)


def test_compact_mask_matches_a_row_by_row_listing():
    generator = torch.Generator().manual_seed(3)
    for density in (0.0, 0.1, 0.5, 1.0):
        mask = torch.rand(40, 23, generator=generator) < density
        listed = [row.nonzero().squeeze(1).tolist() for row in mask]
        for width in (None, 0, 5, 30):
            size = max(map(len, listed)) if width is None else width
            expected = [(row + [-1] * size)[:size] for row in listed]
            assert compact_mask(mask, width).tolist() == expected, (density, width)
