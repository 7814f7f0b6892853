"""Contract checks for plugin authors, in the spirit of scikit-learn's ``check_estimator``.

Call :func:`check_plugin` from your own tests on every plugin class you ship; it raises ``AssertionError`` with
an explanation when the plugin breaks the contract of its group::

    from stcrank.testing import check_plugin

    def test_my_loss_honours_the_contract():
        check_plugin("losses", MyLoss)

The same checks run over every installed plugin in stcrank's own test suite.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from stcrank import registry
from stcrank.plugins import Ensemble, LabelDefinition, LabelOutput, Loss, NegativeSampler, Reranker, SampledNegatives


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_loss(loss: Loss) -> None:
    """Check a loss: finite scalar, gradients reach the scores, padded items change nothing, weights honoured."""
    rows, length = 6, 5
    generator = _generator(0)
    scores = torch.randn(rows, length, generator=generator, requires_grad=True)
    target = torch.zeros(rows, length)
    target[:, 0] = 1.0  # every row: one positive (highest priority) and several lower items
    target[:, 1] = torch.randint(0, 2, (rows,), generator=generator).float()
    mask = torch.ones(rows, length, dtype=torch.bool)
    mask[:, -1] = False
    value = loss(scores, target, mask)
    assert isinstance(value, Tensor) and value.dim() == 0, f"{type(loss).__name__} must return a scalar tensor"
    assert torch.isfinite(value), f"{type(loss).__name__} returned {value.item()} on ordinary input"
    value.backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all(), "gradients must reach the scores"
    assert torch.all(scores.grad[:, -1] == 0), "a padded item (mask False) must not receive a gradient"
    changed = scores.detach().clone()
    changed[:, -1] = 1e4
    assert torch.allclose(loss(changed, target, mask), value.detach(), atol=1e-5), "padded scores changed the loss"
    weighted = loss(scores.detach(), target, mask, torch.ones(rows, length))
    assert torch.isfinite(weighted), "a unit weight must be accepted"


def check_reranker(reranker: Reranker) -> None:
    """Check a re-ranker: shape and dtype, valid distinct indices, determinism, batch independence."""
    generator = _generator(0)
    requests, candidates, k = 7, 12, 4
    value = torch.rand(requests, candidates, generator=generator)
    continue_prob = torch.rand(requests, candidates, generator=generator)
    order = reranker(value, continue_prob, k)
    name = type(reranker).__name__
    assert order.shape == (requests, k) and order.dtype == torch.long, f"{name} must return LongTensor[R, k]"
    assert order.min() >= 0 and order.max() < candidates, f"{name} returned an index outside [0, n)"
    assert all(len(set(row.tolist())) == k for row in order), f"{name} returned a repeated candidate"
    assert torch.equal(order, reranker(value, continue_prob, k)), f"{name} is not deterministic"
    single = torch.cat([reranker(value[i : i + 1], continue_prob[i : i + 1], k) for i in range(requests)])
    assert torch.equal(order, single), f"{name} gives a request a different list when batched with others"


def check_ensemble(ensemble: Ensemble) -> None:
    """Check an ensemble: names its inputs, keeps the shape, finite on probabilities."""
    tasks = ensemble.tasks
    assert tasks, f"{type(ensemble).__name__}.tasks must name at least one prediction"
    generator = _generator(0)
    predictions = {task: torch.rand(3, 5, generator=generator).clamp(1e-4, 1) for task in tasks}
    value = ensemble(predictions)
    assert value.shape == (3, 5), f"{type(ensemble).__name__} must keep the predictions' shape"
    assert torch.isfinite(value).all(), f"{type(ensemble).__name__} returned non-finite values"


def check_label(label: LabelDefinition, columns: Mapping[str, Tensor]) -> None:
    """Check a label definition on example logged columns (each ``[N]``) that the plugin author provides."""
    name = type(label).__name__
    assert label.required_columns, f"{name}.required_columns must name the columns it reads"
    output = label(columns)
    count = len(next(iter(columns.values())))
    assert isinstance(output, LabelOutput), f"{name}.compute must return a LabelOutput"
    assert output.target.shape == output.mask.shape == output.weight.shape == (count,), f"{name}: shapes differ"
    assert output.mask.dtype == torch.bool, f"{name}: mask must be boolean"
    assert torch.isfinite(output.target).all() and (output.weight >= 0).all(), f"{name}: bad target or weight"


def check_negative_sampler(sampler: NegativeSampler, pools: Mapping[str, Tensor], targets: Tensor) -> None:
    """Check a sampler on example pools: shapes, never the target, deterministic under a seed."""
    name = type(sampler).__name__
    first = sampler.sample(pools, targets, _generator(1))
    assert isinstance(first, SampledNegatives), f"{name}.sample must return SampledNegatives"
    assert first.items.shape == first.priority.shape == first.mask.shape, f"{name}: shapes differ"
    assert first.items.shape[0] == targets.shape[0], f"{name}: one row of negatives per target"
    hits = (first.items == targets.unsqueeze(1)) & first.mask
    assert not hits.any(), f"{name} drew an example's own target as a negative"
    second = sampler.sample(pools, targets, _generator(1))
    assert torch.equal(first.items, second.items), f"{name} is not deterministic under a seeded generator"


CHECKS: dict[str, Callable[..., None]] = {
    "stcrank.losses": check_loss,
    "stcrank.rerankers": check_reranker,
    "stcrank.ensembles": check_ensemble,
    "stcrank.labels": check_label,
    "stcrank.negative_samplers": check_negative_sampler,
}


def check_plugin(group: str, plugin: type | str, init_args: Mapping[str, Any] | None = None, **inputs: Any) -> None:
    """Build a plugin and run its group's contract checks.

    Args:
        group: The plugin group, full or short (``"losses"``).
        plugin: The plugin class, or any name :func:`stcrank.registry.load` accepts.
        init_args: Constructor arguments; the defaults when None.
        **inputs: Example inputs the group's check needs: ``columns`` for labels; ``pools`` and ``targets`` for
            negative samplers.
    """
    full = registry.group_name(group)
    cls = registry.load(full, plugin) if isinstance(plugin, str) else plugin
    base = registry.base_class(full)
    assert isinstance(cls, type) and issubclass(cls, base), f"{cls!r} is not a subclass of {base.__qualname__}"
    instance = cls(**dict(init_args or {}))
    CHECKS[full](instance, **inputs)
