"""Input checks shared by the re-rankers and the sequence-value utilities.

Every check raises :class:`ValueError` (or :class:`TypeError` for a wrong dtype) whose message names the
argument, what was expected and, for bad values, the first offending request and candidate.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def _first_position(bad: Tensor) -> str:
    """Describe the first ``True`` entry of a 2-D boolean tensor as ``request r, candidate j``."""
    request, candidate = (int(i) for i in bad.nonzero()[0])
    return f"request {request}, candidate {candidate}"


def check_batch(value: Tensor, continue_prob: Tensor, k: int) -> None:
    """Check the shapes of a re-ranking batch and the list length.

    Args:
        value: Value of each candidate, shape ``[R, n]``.
        continue_prob: Continuation probability of each candidate, shape ``[R, n]``.
        k: Length of the list to build.

    Raises:
        ValueError: If the shapes differ, are not 2-D, or ``k`` is not in ``[1, n]``.
    """
    if value.dim() != 2 or value.shape != continue_prob.shape:
        raise ValueError(
            f"value and continue_prob must both be [R, n]; got {tuple(value.shape)} and {tuple(continue_prob.shape)}"
        )
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k <= value.shape[1]:
        raise ValueError(f"k must be in [1, n={value.shape[1]}], got {k}")


def check_values(value: Tensor) -> None:
    """Check that candidate values are finite and small enough that no list value overflows.

    Args:
        value: Value of each candidate, floating ``[R, n]``; magnitude at most the dtype's maximum divided by ``n``.

    Raises:
        TypeError: If ``value`` is not floating point.
        ValueError: If it holds NaN, an infinity, or a magnitude above that bound.
    """
    if not value.is_floating_point():
        raise TypeError(f"value must be a floating-point tensor, got dtype {value.dtype}")
    value = value.detach()
    if value.numel() == 0:
        return
    # Fast path: two reductions (min/max propagate NaN); the element-wise diagnosis runs only on failure.
    low, high = torch.aminmax(value)
    if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
        nan = torch.isnan(value)
        if nan.any():
            raise ValueError(f"value contains NaN at {_first_position(nan)}")
        raise ValueError(f"value must be finite; found an infinity at {_first_position(torch.isinf(value))}")
    # A list value sums up to n candidate values: bound them so that no sum overflows to inf (and 0 * inf to NaN).
    limit = torch.finfo(value.dtype).max / value.shape[-1]
    largest = max(-float(low), float(high))
    if largest > limit:
        raise ValueError(
            f"value holds {largest:.3g} in magnitude; expected at most {limit:.3g} (the {value.dtype} maximum over "
            f"n={value.shape[-1]} candidates), so that list values cannot overflow"
        )


def check_continue_prob(continue_prob: Tensor) -> None:
    """Check that continuation probabilities are floating point and lie in ``[0, 1]``.

    Raises:
        TypeError: If ``continue_prob`` is not floating point.
        ValueError: If it holds NaN or a value outside ``[0, 1]`` (naming the first one).
    """
    if not continue_prob.is_floating_point():
        raise TypeError(f"continue_prob must be a floating-point tensor, got dtype {continue_prob.dtype}")
    continue_prob = continue_prob.detach()
    if continue_prob.numel() == 0:
        return
    low, high = torch.aminmax(continue_prob)
    if not (bool(low >= 0) and bool(high <= 1)):
        nan = torch.isnan(continue_prob)
        if nan.any():
            raise ValueError(f"continue_prob contains NaN at {_first_position(nan)}")
        outside = (continue_prob < 0) | (continue_prob > 1)
        found = float(continue_prob[outside][0])
        raise ValueError(f"continue_prob must lie in [0, 1]; found {found} at {_first_position(outside)}")


def check_scores(value: Tensor, continue_prob: Tensor) -> tuple[Tensor, Tensor]:
    """Check the candidate scores of a batch and bring them to one floating dtype, detached from autograd.

    Re-rankers return indices, which carry no gradient, so they work on detached scores: inputs that require
    grad are accepted and left untouched.

    Args:
        value: Value of each candidate, shape ``[R, n]``; must be finite, of magnitude at most the dtype's maximum
            divided by ``n``.
        continue_prob: Probability that the user continues after each candidate, ``[R, n]``, in ``[0, 1]``.

    Returns:
        ``(value, continue_prob)`` detached, in their common floating dtype (at least float32).

    Raises:
        TypeError: If either tensor is not floating point.
        ValueError: If ``value`` holds NaN or an infinity or values so large that a list value could overflow
            (magnitude above the dtype's maximum divided by ``n``), or ``continue_prob`` holds NaN or leaves
            ``[0, 1]``.
    """
    for name, tensor in (("value", value), ("continue_prob", continue_prob)):
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    dtype = torch.promote_types(torch.promote_types(value.dtype, continue_prob.dtype), torch.float32)
    value, continue_prob = value.detach().to(dtype), continue_prob.detach().to(dtype)
    check_values(value)
    check_continue_prob(continue_prob)
    return value, continue_prob


def check_order(
    order: Tensor, num_requests: int, num_candidates: int, name: str = "order", *, distinct: bool = True
) -> None:
    """Check a batch of candidate lists.

    Args:
        order: Candidate indices per request, shape ``[R, k]``.
        num_requests: Expected ``R``.
        num_candidates: Number of candidates ``n`` the indices point into.
        name: Argument name used in error messages.
        distinct: Require every list to show each candidate at most once (a list that repeats an item is no
            list the feed can show, and its value is meaningless).

    Raises:
        TypeError: If ``order`` is not an integer tensor.
        ValueError: If its shape is wrong, an index falls outside ``[0, n)``, or (``distinct``) a list repeats a
            candidate.
    """
    if order.is_floating_point() or order.is_complex() or order.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of candidate indices, got dtype {order.dtype}")
    if order.dim() != 2 or order.shape[0] != num_requests:
        raise ValueError(f"{name} must be [R={num_requests}, k]; got {tuple(order.shape)}")
    if order.numel() and (int(order.min()) < 0 or int(order.max()) >= num_candidates):
        raise ValueError(
            f"{name} holds indices outside [0, {num_candidates}): min {int(order.min())}, max {int(order.max())}"
        )
    if distinct and order.shape[1] > 1:
        ranked = order.sort(dim=1).values
        repeated = ranked[:, 1:] == ranked[:, :-1]
        if bool(repeated.any()):
            request, position = (int(i) for i in repeated.nonzero()[0])
            raise ValueError(
                f"{name} repeats candidate {int(ranked[request, position])} in request {request}; a list shows "
                "each candidate at most once"
            )


def check_context(
    required: tuple[str, ...], context: Mapping[str, Tensor] | None, shape: torch.Size
) -> dict[str, Tensor]:
    """Check the per-candidate context a prefix scorer reads.

    Args:
        required: Names of the context tensors the scorer needs.
        context: The context passed by the caller, or ``None``.
        shape: The ``[R, n]`` shape every context tensor must have.

    Returns:
        The required context tensors by name.

    Raises:
        ValueError: If a required tensor is missing or has the wrong shape.
    """
    context = dict(context or {})
    missing = [name for name in required if name not in context]
    if missing:
        raise ValueError(f"the prefix scorer needs context {list(required)}; missing {missing}")
    for name in required:
        if tuple(context[name].shape) != tuple(shape):
            raise ValueError(
                f"context {name!r} must have the candidates' shape {tuple(shape)}, got {tuple(context[name].shape)}"
            )
    return {name: context[name] for name in required}
