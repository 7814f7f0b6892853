"""Tensor-only forward passes of the RecFlow networks (DIN, DSSM, SASRec) and their input schemas.

Each graph takes named positional tensors in the layout of the data module's candidates batch (see the data
formats page): ids shifted by +1 with 0 as padding, one row per request, the request-level tensors once per
request. The per-request share of each network (DIN's request encoding, DSSM's user tower, SASRec's sequence
encoder) is computed once per request and scored against every candidate, as in the networks themselves.

* DIN: ``din`` scores ``candidates [requests, candidates, 8]`` to logits ``[requests, candidates]``.
* DSSM: ``dssm_user_tower`` (user vectors), ``dssm_item_tower`` (item vectors of ``items [items, 8]``) and
  ``dssm`` (logits of the candidates, their inner products).
* SASRec: ``sasrec_user_tower`` (user vectors of ``seq [requests, seq_len]`` video ids) and
  ``sasrec_item_embeddings`` (vectors of ``items [items]`` video ids); retrieval scores are their inner products.

The competing-item (UBM) variants take ``competing [requests, seq_len, competing, 5]`` and ``competing_mask``;
their refinement runs on the dense grid here (the training code skips padding by data-dependent indexing, which
a traced graph cannot hold), with the same result. DIN's auxiliary two-tower is a training device and is not
exported.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stcrank.export.schema import DimSpec, GraphSpec, TensorSpec
from stcrank.models.competing import CompetingAttention
from stcrank.models.din import DIN
from stcrank.models.dssm import DSSM, masked_mean
from stcrank.models.features import (
    CONTEXT_FEATURES,
    ITEM_FEATURES,
    SEQUENCE_FEATURES,
    USER_FEATURES,
    RecFlowEmbeddings,
)
from stcrank.models.sasrec import SASRec

SEQ_LEN = 50
"""Behaviours per request in RecFlow stores (the example size traced at export; any length is accepted)."""


def _dims(network: nn.Module, competing: bool) -> dict[str, DimSpec]:
    dims = {
        "requests": DimSpec("requests", example=3, description="requests (one row each)"),
        "candidates": DimSpec("candidates", example=7, description="candidates per request (padding allowed)"),
        "seq_len": DimSpec("seq_len", example=SEQ_LEN, description="behaviours per request (left-padded)"),
        "items": DimSpec("items", example=11, description="items to embed"),
    }
    if competing:
        dims["competing"] = DimSpec("competing", example=5, description="competing items per behaviour")
    return dims


def _ids(name: str, shape: tuple[int | str, ...], columns: tuple[str, ...], sizes: dict[str, int], text: str):
    return TensorSpec(name, "int64", shape, text, columns=columns, id_sizes=tuple(sizes[c] for c in columns))


def request_inputs(feature_sizes: dict[str, int], competing: bool) -> list[TensorSpec]:
    """The request-level inputs of DIN and DSSM: context, user, behaviours (and their competing items)."""
    specs = [
        _ids("context", ("requests", 3), CONTEXT_FEATURES, feature_sizes, "request time: wday, hour, minute (+1)"),
        _ids("user", ("requests", 5), USER_FEATURES, feature_sizes, "user features (+1)"),
        _ids("seq", ("requests", "seq_len", 5), SEQUENCE_FEATURES, feature_sizes, "behaviours, most recent last"),
        TensorSpec("seq_mask", "bool", ("requests", "seq_len"), "True on real behaviours"),
    ]
    if competing:
        specs += [
            _ids(
                "competing",
                ("requests", "seq_len", "competing", 5),
                SEQUENCE_FEATURES,
                feature_sizes,
                "competing items of each behaviour",
            ),
            TensorSpec("competing_mask", "bool", ("requests", "seq_len", "competing"), "True on real competing items"),
        ]
    return specs


def _candidates(feature_sizes: dict[str, int]) -> TensorSpec:
    sizes = {**feature_sizes}
    return TensorSpec(
        "candidates",
        "int64",
        ("requests", "candidates", 8),
        "candidate item features (+1); upload wday/hour/minute use the context tables; 0 rows on padding",
        columns=ITEM_FEATURES,
        id_sizes=tuple(sizes[c] for c in ITEM_FEATURES),
    )


def refine_dense(
    attention: CompetingAttention | None,
    embeddings: RecFlowEmbeddings,
    behaviours: Tensor,
    competing: Tensor | None,
    competing_mask: Tensor | None,
) -> Tensor:
    """Behaviours refined by their competing items on the dense ``[R, L, K]`` grid (none without the variant)."""
    if attention is None:
        return behaviours
    return attention(embeddings.behaviour(competing).flatten(-2), competing_mask, behaviours)


class DINGraph(nn.Module):
    """DIN's candidate scoring: request encoding once per request, then every candidate.

    Args:
        network: A trained :class:`~stcrank.models.din.DIN`.
    """

    def __init__(self, network: DIN) -> None:
        super().__init__()
        self.network = network

    def forward(
        self,
        context: Tensor,
        user: Tensor,
        seq: Tensor,
        seq_mask: Tensor,
        candidates: Tensor,
        competing: Tensor | None = None,
        competing_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[R, C]`` of the candidates (the inputs are documented in the graph's schema)."""
        din = self.network
        behaviours = din.embeddings.behaviour(seq).flatten(-2)
        behaviours = refine_dense(din.competing, din.embeddings, behaviours, competing, competing_mask)
        first = din.tower[0]
        tower = F.linear(din.request_embedding(context, user), first.weight[:, : din.input_widths[0]], first.bias)
        # DIN.score_items without its cache blocking and distinct-row merging (shapes that depend on the data).
        rows, count, width = candidates.shape
        target_hidden, item_share = (
            din._item_side(candidates.reshape(rows * count, width))
            .view(rows, count, -1)
            .split([din.attention.first.out_features, first.out_features], dim=-1)
        )
        interest = din.attention.attend(behaviours, din.attention.project_keys(behaviours), seq_mask, target_hidden)
        interest_weight = first.weight.split(din.input_widths, dim=1)[1]
        hidden = torch.relu(item_share + F.linear(interest, interest_weight) + tower.unsqueeze(1))
        for layer in list(din.tower)[2:]:
            hidden = layer(hidden)
        return hidden.squeeze(-1)


class DSSMUserGraph(nn.Module):
    """DSSM's user tower: one vector per request.

    Args:
        network: A trained :class:`~stcrank.models.dssm.DSSM`.
    """

    def __init__(self, network: DSSM) -> None:
        super().__init__()
        self.network = network

    def forward(
        self,
        context: Tensor,
        user: Tensor,
        seq: Tensor,
        seq_mask: Tensor,
        competing: Tensor | None = None,
        competing_mask: Tensor | None = None,
    ) -> Tensor:
        """User vectors ``[R, w]``."""
        dssm = self.network
        behaviours = dssm.embeddings.behaviour(seq).flatten(-2)
        parts = [dssm.embeddings.context(context).flatten(-2), dssm.embeddings.user(user).flatten(-2)]
        parts.append(masked_mean(behaviours, seq_mask))
        if dssm.competing is not None:
            refined = refine_dense(dssm.competing, dssm.embeddings, behaviours, competing, competing_mask)
            parts.append(masked_mean(refined, seq_mask))
        return dssm.user_tower(torch.cat(parts, dim=-1))


class DSSMItemGraph(nn.Module):
    """DSSM's item tower.

    Args:
        network: A trained :class:`~stcrank.models.dssm.DSSM`.
    """

    def __init__(self, network: DSSM) -> None:
        super().__init__()
        self.network = network

    def forward(self, items: Tensor) -> Tensor:
        """Item vectors ``[N, w]`` of items ``[N, 8]``."""
        return self.network.item_tower(self.network.embeddings.item(items).flatten(-2))


class DSSMGraph(nn.Module):
    """DSSM's candidate scoring: the user vector of each request against its candidates' item vectors.

    Args:
        network: A trained :class:`~stcrank.models.dssm.DSSM`.
    """

    def __init__(self, network: DSSM) -> None:
        super().__init__()
        self.users = DSSMUserGraph(network)
        self.items = DSSMItemGraph(network)

    def forward(
        self,
        context: Tensor,
        user: Tensor,
        seq: Tensor,
        seq_mask: Tensor,
        candidates: Tensor,
        competing: Tensor | None = None,
        competing_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[R, C]``."""
        users = self.users(context, user, seq, seq_mask, competing, competing_mask)
        rows, count, width = candidates.shape
        items = self.items(candidates.reshape(rows * count, width)).view(rows, count, -1)
        return (items * users.unsqueeze(1)).sum(-1)


class SASRecUserGraph(nn.Module):
    """SASRec's user vector: the encoder's output at the most recent behaviour.

    Args:
        network: A trained :class:`~stcrank.models.sasrec.SASRec`.
    """

    def __init__(self, network: SASRec) -> None:
        super().__init__()
        self.network = network

    def forward(self, seq: Tensor, seq_mask: Tensor) -> Tensor:
        """User vectors ``[R, d]``."""
        return self.network.user_vector(seq, seq_mask)


class SASRecItemGraph(nn.Module):
    """SASRec's item vectors (the video-id embeddings).

    Args:
        network: A trained :class:`~stcrank.models.sasrec.SASRec`.
    """

    def __init__(self, network: SASRec) -> None:
        super().__init__()
        self.network = network

    def forward(self, items: Tensor) -> Tensor:
        """Item vectors ``[N, d]`` of video ids ``[N]``."""
        return self.network.item_vectors(items)


def _logits(description: str) -> TensorSpec:
    return TensorSpec("logits", "float32", ("requests", "candidates"), description)


def din_graphs(network: DIN, feature_sizes: dict[str, int]) -> list[tuple[GraphSpec, nn.Module]]:
    """The graph of a DIN (``din``)."""
    competing = network.competing is not None
    requests = request_inputs(feature_sizes, competing)
    spec = GraphSpec(
        name="din",
        kind="network",
        inputs=[*requests[:4], _candidates(feature_sizes), *requests[4:]],
        outputs=[_logits("DIN logit of each candidate (sigmoid: effective-view probability); any value on padding")],
        dims={k: v for k, v in _dims(network, competing).items() if k != "items"},
        metadata={"network": "DIN", "feature_sizes": dict(feature_sizes), "competing": competing},
        description="DIN candidate scoring: the request's share once per request, then every candidate.",
    )
    return [(spec, DINGraph(network))]


def dssm_graphs(network: DSSM, feature_sizes: dict[str, int]) -> list[tuple[GraphSpec, nn.Module]]:
    """The graphs of a DSSM: ``dssm_user_tower``, ``dssm_item_tower`` and ``dssm`` (the candidates' logits)."""
    competing = network.competing is not None
    dims = _dims(network, competing)
    requests = request_inputs(feature_sizes, competing)
    width = network.user_tower[-1].out_features
    metadata = {"network": "DSSM", "feature_sizes": dict(feature_sizes), "competing": competing, "width": width}
    items = TensorSpec(
        "items",
        "int64",
        ("items", 8),
        "item features (+1)",
        ITEM_FEATURES,
        tuple(feature_sizes[c] for c in ITEM_FEATURES),
    )
    user_spec = GraphSpec(
        name="dssm_user_tower",
        kind="network",
        inputs=requests,
        outputs=[TensorSpec("user_vector", "float32", ("requests", width), "user-tower output")],
        dims={k: v for k, v in dims.items() if k in ("requests", "seq_len", "competing")},
        metadata=metadata,
        description="DSSM user tower: one vector per request.",
    )
    item_spec = GraphSpec(
        name="dssm_item_tower",
        kind="network",
        inputs=[items],
        outputs=[TensorSpec("item_vector", "float32", ("items", width), "item-tower output")],
        dims={"items": dims["items"]},
        metadata=metadata,
        description="DSSM item tower; a logit is the inner product of a user vector and an item vector.",
    )
    score_spec = GraphSpec(
        name="dssm",
        kind="network",
        inputs=[*requests[:4], _candidates(feature_sizes), *requests[4:]],
        outputs=[_logits("inner product of the request's user vector and each candidate's item vector")],
        dims={k: v for k, v in dims.items() if k != "items"},
        metadata=metadata,
        description="DSSM candidate scoring: the user tower once per request, the item tower on every candidate.",
    )
    return [(user_spec, DSSMUserGraph(network)), (item_spec, DSSMItemGraph(network)), (score_spec, DSSMGraph(network))]


def sasrec_graphs(network: SASRec, feature_sizes: dict[str, int]) -> list[tuple[GraphSpec, nn.Module]]:
    """The graphs of a SASRec: ``sasrec_user_tower`` and ``sasrec_item_embeddings``."""
    videos = int(feature_sizes["video_id"])
    length = min(SEQ_LEN, network.max_len)
    dims = {
        "requests": DimSpec("requests", example=3, description="requests (one row each)"),
        "seq_len": DimSpec(
            "seq_len", max=network.max_len, example=length, description="behaviours per request (left-padded)"
        ),
        "items": DimSpec("items", example=11, description="items to embed"),
    }
    metadata = {"network": "SASRec", "feature_sizes": dict(feature_sizes), "width": network.embedding_dim}
    user_spec = GraphSpec(
        name="sasrec_user_tower",
        kind="network",
        inputs=[
            TensorSpec(
                "seq", "int64", ("requests", "seq_len"), "behaviour video ids (+1), most recent last", id_size=videos
            ),
            TensorSpec("seq_mask", "bool", ("requests", "seq_len"), "True on real behaviours"),
        ],
        outputs=[TensorSpec("user_vector", "float32", ("requests", network.embedding_dim), "user vector")],
        dims={k: v for k, v in dims.items() if k != "items"},
        metadata=metadata,
        description="SASRec user vector (retrieval scores are inner products with item vectors).",
    )
    item_spec = GraphSpec(
        name="sasrec_item_embeddings",
        kind="network",
        inputs=[TensorSpec("items", "int64", ("items",), "video ids (+1)", id_size=videos)],
        outputs=[TensorSpec("item_vector", "float32", ("items", network.embedding_dim), "item vector")],
        dims={"items": dims["items"]},
        metadata=metadata,
        description="SASRec item vectors (the video-id embeddings).",
    )
    return [(user_spec, SASRecUserGraph(network)), (item_spec, SASRecItemGraph(network))]
