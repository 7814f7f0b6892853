import pytest
import torch

from stcrank.simulation import rng

MASK = 0xFFFFFFFF
GOLDEN = 0x9E3779B9


def _fmix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK
    return h ^ (h >> 16)


def _combine(h: int, key: int) -> int:
    k = _fmix(key ^ GOLDEN)
    return _fmix((h ^ (k + GOLDEN + ((h << 6) & MASK) + (h >> 2))) & MASK)


def _reference(seed: int, *keys: int) -> int:
    h = _combine(_fmix(seed & MASK), (seed >> 32) & MASK)
    for key in keys:
        h = _combine(h, key)
    return h


def test_hash_matches_a_pure_python_reference_including_wrapping_products():
    keys = torch.tensor([0, 1, 7, 123456789, MASK])
    got = rng.hash32(2**40 + 5, 3, keys)
    want = [_reference(2**40 + 5, 3, int(k)) for k in keys]
    assert got.tolist() == want


def test_draws_do_not_depend_on_the_batch_they_are_computed_in():
    keys = torch.arange(1000)
    full = rng.uniform(7, 1, keys)
    part = rng.uniform(7, 1, keys[500:510])
    assert torch.equal(full[500:510], part)
    grid = rng.pair_uniform(7, (4, keys[:, None]), torch.arange(50)[None, :], 50)
    sub = rng.pair_uniform(7, (4, keys[3:5, None]), torch.tensor([[9, 2]]), 50)
    assert torch.equal(grid[3:5][:, [9, 2]], sub)


def test_uniforms_are_uniform_open_and_streams_independent():
    keys = torch.arange(200_000)
    u = rng.uniform(0, keys)
    assert float(u.min()) > 0 and float(u.max()) < 1
    counts = torch.histc(u, bins=20, min=0, max=1)
    expected = keys.numel() / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45  # 19 dof: p ~ 0.001
    v = rng.uniform(0, keys, 1)
    assert abs(float(torch.corrcoef(torch.stack([u, v]))[0, 1])) < 0.01
    assert not torch.equal(u, rng.uniform(1, keys))


def test_pair_uniform_rows_and_columns_are_uncorrelated():
    u = rng.pair_uniform(3, (9, torch.arange(400)[:, None]), torch.arange(500)[None, :], 500)
    assert abs(float(u.mean()) - 0.5) < 0.005
    row_means = u.mean(1)
    assert float(row_means.std()) < 0.03  # no row-level bias: sd of a mean of 500 uniforms is 0.013
    assert abs(float(torch.corrcoef(torch.stack([u[:, 0], u[:, 1]]))[0, 1])) < 0.15


def test_normal_and_gumbel_have_the_right_moments():
    keys = torch.arange(100_000)
    z = rng.normal(5, keys)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    g = rng.gumbel(5, keys)
    assert abs(float(g.mean()) - 0.5772) < 0.02


def test_bad_keys_raise():
    with pytest.raises(ValueError, match="2\\*\\*32"):
        rng.hash32(0, torch.tensor([-1]))
    with pytest.raises(ValueError, match="2\\*\\*32"):
        rng.hash32(0, torch.tensor([2**32]))
    with pytest.raises(ValueError, match="seed"):
        rng.hash32(-1, 0)
