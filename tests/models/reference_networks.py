"""The networks' forward passes as they were before the per-request split: the reference the split is tested against.

Each function computes, with a network's own parameters, what that network's forward pass computed when every
row carried its own copy of the request-level tensors and every candidate recomputed the request's share: the
full ``[B, C, L, hidden]`` attention hidden layer with its ReLU, the tower on the concatenated input, the layer
norm over the MMoE's whole input. Batches are first expanded to one row per exposure
(:func:`~stcrank.data.recflow.collate.rows_per_exposure`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from stcrank.data.recflow.collate import rows_per_exposure
from stcrank.models.aux_tower import AuxiliaryTwoTower
from stcrank.models.competing import competing_behaviours
from stcrank.models.din import DIN, TargetAttention
from stcrank.models.dssm import DSSM, masked_mean
from stcrank.models.features import SEQUENCE_FEATURES
from stcrank.models.mmoe import MMoE


def target_attention(attention: TargetAttention, keys: Tensor, mask: Tensor, targets: Tensor) -> Tensor:
    """``MLP([behaviour ; target]) -> 1`` on every (target, behaviour) pair, masked softmax, weighted sum."""
    weight_keys, weight_targets = (
        attention.first.weight[:, : attention.width],
        attention.first.weight[:, attention.width :],
    )
    hidden = keys @ weight_keys.T  # [B, L, h]
    hidden = hidden.unsqueeze(1) + (targets @ weight_targets.T + attention.first.bias).unsqueeze(2)
    logits = attention.second(torch.relu(hidden)).squeeze(-1)  # [B, C, L]
    logits = logits.masked_fill(~mask.unsqueeze(1), -1e9)
    return torch.softmax(logits, dim=-1) @ keys


def _din_request_side(model: DIN, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    embeddings = model.embeddings
    request = torch.cat([embeddings.context(batch["context"]), embeddings.user(batch["user"])], -2).flatten(-2)
    behaviours = embeddings.behaviour(batch["seq"]).flatten(-2)
    return request, behaviours


def din_scores(model: DIN, batch: dict[str, Tensor], items: Tensor) -> Tensor:
    """DIN logits ``[B, C]`` of items ``[B, C, 8]``, every row computing its request's share itself."""
    batch = rows_per_exposure(batch)
    request, behaviours = _din_request_side(model, batch)
    if model.competing is not None:  # the competing attention on the full [B, L, K] grid
        embedded = competing_behaviours(model.embeddings, batch)
        behaviours = model.competing(embedded, batch["competing_mask"], behaviours)
    item = model.embeddings.item(items)  # [B, C, 8, d]
    interest = target_attention(
        model.attention, behaviours, batch["seq_mask"], item[..., : len(SEQUENCE_FEATURES), :].flatten(-2)
    )
    request = request.unsqueeze(1).expand(-1, items.shape[1], -1)
    return model.tower(torch.cat([request, interest, item.flatten(-2)], dim=-1)).squeeze(-1)


def din_auxiliary_scores(model: DIN, batch: dict[str, Tensor]) -> Tensor:
    """DIN's auxiliary two-tower logits ``[B, 1 + K]`` (or the DIN's own without the tower)."""
    items = torch.cat([batch["item"].unsqueeze(1), batch["aux_items"]], dim=1)
    if model.auxiliary is None:
        return din_scores(model, batch, items)
    batch = rows_per_exposure(batch)
    request, behaviours = _din_request_side(model, batch)
    return two_tower(model.auxiliary, request, behaviours, batch["seq_mask"], model.embeddings.item(items).flatten(-2))


def two_tower(tower: AuxiliaryTwoTower, request: Tensor, behaviours: Tensor, mask: Tensor, items: Tensor) -> Tensor:
    """Cosine logits of the auxiliary two-tower, one user vector per row."""
    logits = tower.self_agg(behaviours).squeeze(-1).masked_fill(~mask, -1e9)
    weights = torch.softmax(logits, dim=-1) * mask
    pooled = (weights.unsqueeze(-1) * behaviours).sum(-2)
    user = torch.nn.functional.normalize(
        tower.user_tower(torch.cat([request, pooled, masked_mean(behaviours, mask)], dim=-1)), dim=-1
    )
    item = torch.nn.functional.normalize(tower.item_tower(items), dim=-1)
    return (item @ user.unsqueeze(-1)).squeeze(-1)


def dssm_user_vector(model: DSSM, batch: dict[str, Tensor]) -> Tensor:
    """DSSM user vectors, one per row."""
    batch = rows_per_exposure(batch)
    embeddings = model.embeddings
    behaviours = embeddings.behaviour(batch["seq"]).flatten(-2)
    parts = [
        embeddings.context(batch["context"]).flatten(-2),
        embeddings.user(batch["user"]).flatten(-2),
        masked_mean(behaviours, batch["seq_mask"]),
    ]
    if model.competing is not None:
        embedded = competing_behaviours(embeddings, batch)
        parts.append(masked_mean(model.competing(embedded, batch["competing_mask"], behaviours), batch["seq_mask"]))
    return model.user_tower(torch.cat(parts, dim=-1))


def dssm_scores(model: DSSM, batch: dict[str, Tensor], items: Tensor) -> Tensor:
    """DSSM logits ``[B, C]`` of items ``[B, C, 8]``."""
    user = dssm_user_vector(model, batch)
    item = model.item_tower(model.embeddings.item(items).flatten(-2))
    return (item * user.unsqueeze(1)).sum(-1)


def mmoe_logits(model: MMoE, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """MMoE logits with every column materialised at the batch's full shape: layer norm over the whole input."""
    shape = torch.broadcast_shapes(*(batch[name].shape for name in model.input_columns))
    batch = {name: value.expand(shape).contiguous() for name, value in batch.items()}
    parts = [model.embeddings[name](batch[name].long()) for name in model.categorical]
    parts += [model.count_embeddings[name](batch[name].long().clamp(0, cap - 1)) for name, cap in model.counts.items()]
    same = (batch["item_category"] == batch["trigger_category"]).long()
    views = batch["hist_same_category_views"].long().clamp(0, 15)
    parts.append(model.involvement(same * 16 + views))
    parts.append(torch.log1p(batch["item_price"].float().clamp(min=0)).unsqueeze(-1))
    x = model.input_norm(torch.cat(parts, dim=-1))
    experts = torch.stack([expert(x) for expert in model.experts], dim=-2)
    out = {}
    for task in model.tasks:
        gate = torch.softmax(model.gates[task](x), dim=-1).unsqueeze(-1)
        out[task] = model.towers[task]((gate * experts).sum(dim=-2)).squeeze(-1)
    return out


def perturbed(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The model in ``dtype`` with random weights everywhere (biases, padding rows), so no term hides behind a 0."""
    model = model.to(dtype)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.3)
    return model


def grads(model: torch.nn.Module) -> dict[str, Tensor]:
    """The gradient of every parameter that has one."""
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
