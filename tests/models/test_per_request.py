import pytest
import torch

from stcrank.models.per_request import (
    ACCELERATOR_BLOCK_ELEMENTS,
    block_sizes,
    length_sorted_blocks,
    rows_of,
    without_padded_positions,
)


def test_rows_of_gathers_the_request_of_each_row():
    per_request = torch.tensor([[1.0], [2.0], [3.0]])
    assert rows_of(per_request, None) is per_request
    assert rows_of(per_request, torch.tensor([2, 0, 2])).flatten().tolist() == [3.0, 1.0, 3.0]


@pytest.mark.parametrize(
    ("rows", "per_row", "block", "expected"), [(10, 3, 9, [3, 3, 3, 1]), (4, 100, 9, [1, 1, 1, 1])]
)
def test_block_sizes_cover_every_row(rows, per_row, block, expected):
    assert block_sizes(rows, per_row, block) == expected
    assert block_sizes(0, per_row, block) == [0]


def test_accelerator_blocks_are_large():
    sizes = block_sizes(1000, 1000, 10, torch.device("meta"))
    assert sizes[0] == min(1000, ACCELERATOR_BLOCK_ELEMENTS // 1000)


def test_padding_positions_of_every_row_are_dropped_and_real_ones_kept():
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    values = torch.arange(8.0).view(2, 4)
    cut_mask, cut_values = without_padded_positions(mask, values)
    assert cut_mask.tolist() == [[True, True], [False, True]] and cut_values.tolist() == [[2, 3], [6, 7]]
    gaps = torch.tensor([[1, 0, 1, 0]], dtype=torch.bool)  # not one run: positions picked
    assert without_padded_positions(gaps, values[:1])[1].tolist() == [[0.0, 2.0]]
    empty = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)  # a row without behaviours: kept whole
    assert without_padded_positions(empty, values)[1].shape == (2, 4)


def test_length_sorted_blocks_put_similar_lengths_together():
    lengths = torch.tensor([50, 3, 0, 49, 2, 1])
    mask = torch.arange(50) >= 50 - lengths[:, None]
    order, sizes = length_sorted_blocks(mask, 1, block_elements=100)
    assert lengths[order].tolist() == [50, 49, 3, 2, 1, 0]
    assert sum(sizes) == 6 and sizes[0] == 2  # two rows of 50 positions fill a block of 100
    # the row without behaviours (50 positions kept) is not in a block of short rows
    start = sum(sizes[:-1])
    assert lengths[order][start:].tolist() == [0]
