"""Per-user and per-request GAUC of a task's evaluation samples, logged beside the global AUC.

Tasks keep one :class:`~stcrank.metrics.gauc.GroupAUC` per grouping, update it with the same probabilities and
labels as their AUC, and log at the end of the epoch::

    {prefix}gauc_user{suffix}            {prefix}gauc_user_excluded{suffix}
    {prefix}gauc_request{suffix}         {prefix}gauc_request_excluded{suffix}

``*_excluded`` is the number of users or requests left out because all their labels are of one class.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from stcrank.metrics.gauc import GroupAUC

GROUPINGS: tuple[str, ...] = ("user", "request")
"""The groupings of the GAUCs, in logging order."""


def group_ids(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The user and request id of every sample of a batch, for the groupings the batch can give.

    The user id is the batch's ``user_id`` column (e-shop), else column 0 of ``user`` (RecFlow, shifted by one,
    which changes no grouping; held once per request when the batch has ``request_slot``, so taken through it);
    the request id is ``request_id``.

    Args:
        batch: An evaluation batch.

    Returns:
        ``{"user": ids, "request": ids}`` restricted to the keys the batch has.
    """
    ids: dict[str, Tensor] = {}
    if "user_id" in batch:
        ids["user"] = batch["user_id"]
    elif "user" in batch and batch["user"].dim() == 2:
        users = batch["user"][:, 0]
        ids["user"] = users[batch["request_slot"]] if "request_slot" in batch else users
    if "request_id" in batch:
        ids["request"] = batch["request_id"]
    return ids


def make_group_aucs() -> nn.ModuleDict:
    """One :class:`~stcrank.metrics.gauc.GroupAUC` per grouping of :data:`GROUPINGS`."""
    return nn.ModuleDict({name: GroupAUC() for name in GROUPINGS})


def update_group_aucs(
    metrics: nn.ModuleDict, batch: dict[str, Tensor], preds: Tensor, target: Tensor, keep: Tensor | None = None
) -> None:
    """Add a batch's probabilities and labels to every grouping the batch has ids for.

    Args:
        metrics: From :func:`make_group_aucs`.
        batch: The batch (its ids, see :func:`group_ids`).
        preds: Probabilities ``[B]`` (already restricted by ``keep`` when given).
        target: 0/1 labels of ``preds``.
        keep: Bool ``[B]`` selecting the batch rows ``preds`` belong to; ``None`` for all rows.
    """
    for name, ids in group_ids(batch).items():
        metrics[name].update(preds, target, ids if keep is None else ids[keep])


def log_group_aucs(module: LightningModule, metrics: nn.ModuleDict, prefix: str, suffix: str = "") -> None:
    """Log each grouping's GAUC and excluded count, then reset the metrics.

    ``compute()`` gathers the rows of every process (a collective), so whether a grouping saw rows is decided
    over all processes and every rank computes the same groupings.

    Args:
        module: The task (its ``log`` and trainer).
        metrics: From :func:`make_group_aucs`.
        prefix: ``"val/"`` or ``"test/"``.
        suffix: Appended to the names (``"_<task>"`` for a multi-task head).
    """
    seen = torch.tensor([float(metrics[name].update_count) for name in GROUPINGS], device=module.device)
    trainer = module.trainer
    if trainer.world_size > 1:
        seen = trainer.strategy.reduce(seen, reduce_op="sum")
    logged: dict[str, Tensor] = {}
    for name, count in zip(GROUPINGS, seen.tolist(), strict=True):
        if count > 0:
            values = metrics[name].compute()
            logged[f"{prefix}gauc_{name}{suffix}"] = values["gauc"].float()
            logged[f"{prefix}gauc_{name}_excluded{suffix}"] = values["excluded"].float()
        metrics[name].reset()
    if logged:
        # Already global: no further reduction across processes.
        module.log_dict(logged, add_dataloader_idx=False, sync_dist=False)
