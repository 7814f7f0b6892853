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

The graphs call the networks' own methods on their dense paths (``dense=True``): every item, pair and competing
item in one block, where the training code skips padding and repeats by data-dependent indexing, which a traced
graph cannot hold; the result is the same. The competing-item (UBM) variants take
``competing [requests, seq_len, competing, 5]`` and ``competing_mask``. DIN's auxiliary two-tower is a training
device and is not exported.
"""

from __future__ import annotations

from torch import Tensor, nn

from stcrank.export.schema import DimSpec, GraphSpec, TensorSpec
from stcrank.models.din import DIN
from stcrank.models.dssm import DSSM
from stcrank.models.features import CONTEXT_FEATURES, ITEM_FEATURES, SEQUENCE_FEATURES, USER_FEATURES
from stcrank.models.sasrec import SASRec

SEQ_LEN = 50
"""Behaviours per request in RecFlow stores (the example size traced at export; any length is accepted)."""

DIMS = {
    "requests": DimSpec("requests", example=3, description="requests (one row each)"),
    "candidates": DimSpec("candidates", example=7, description="candidates per request (padding allowed)"),
    "seq_len": DimSpec("seq_len", example=SEQ_LEN, description="behaviours per request (left-padded)"),
    "items": DimSpec("items", example=11, description="items to embed"),
    "competing": DimSpec("competing", example=5, description="competing items per behaviour"),
}
"""The named dimensions of the DIN and DSSM graphs."""


def _dims(competing: bool, *names: str) -> dict[str, DimSpec]:
    # The dimensions among names, with the competing items' in the competing-item variant.
    return {name: dim for name, dim in DIMS.items() if name in names or (competing and name == "competing")}


def _ids(
    name: str, shape: tuple[int | str, ...], columns: tuple[str, ...], sizes: dict[str, int], text: str
) -> TensorSpec:
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


def _scoring_spec(
    name: str, feature_sizes: dict[str, int], metadata: dict[str, object], logits: str, description: str
) -> GraphSpec:
    # The candidate-scoring graph of DIN or DSSM: the request-level inputs around the candidates, logits out.
    competing = bool(metadata["competing"])
    requests = request_inputs(feature_sizes, competing)
    candidates = _ids(
        "candidates",
        ("requests", "candidates", 8),
        ITEM_FEATURES,
        feature_sizes,
        "candidate item features (+1); upload wday/hour/minute use the context tables; 0 rows on padding",
    )
    return GraphSpec(
        name=name,
        kind="network",
        inputs=[*requests[:4], candidates, *requests[4:]],
        outputs=[TensorSpec("logits", "float32", ("requests", "candidates"), logits)],
        dims=_dims(competing, "requests", "candidates", "seq_len"),
        metadata=metadata,
        description=description,
    )


class NetworkGraph(nn.Module):
    """A tensor-only forward pass that calls a trained network's own methods.

    Args:
        network: The trained network.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network


class CandidateGraph(NetworkGraph):
    """Candidate scoring of a DIN or a DSSM: the request's share once per request, then every candidate.

    DIN encodes the requests (:meth:`~stcrank.models.din.DIN.encode_requests`), DSSM computes their user vectors;
    both then score the candidates with their ``score_items``, all on the dense paths.
    """

    network: DIN | DSSM

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
        network = self.network
        encode = network.encode_requests if isinstance(network, DIN) else network.user_vectors
        requests = encode(context, user, seq, seq_mask, competing, competing_mask, dense=True)
        return network.score_items(requests, candidates, dense=True)


class DSSMUserGraph(NetworkGraph):
    """DSSM's user tower: one vector per request."""

    network: DSSM

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
        return self.network.user_vectors(context, user, seq, seq_mask, competing, competing_mask, dense=True)


class DSSMItemGraph(NetworkGraph):
    """DSSM's item tower."""

    network: DSSM

    def forward(self, items: Tensor) -> Tensor:
        """Item vectors ``[N, w]`` of items ``[N, 8]``."""
        return self.network.item_vector(items, dense=True)


class SASRecUserGraph(NetworkGraph):
    """SASRec's user vector: the encoder's output at the most recent behaviour."""

    network: SASRec

    def forward(self, seq: Tensor, seq_mask: Tensor) -> Tensor:
        """User vectors ``[R, d]``."""
        return self.network.user_vector(seq, seq_mask)


class SASRecItemGraph(NetworkGraph):
    """SASRec's item vectors (the video-id embeddings)."""

    network: SASRec

    def forward(self, items: Tensor) -> Tensor:
        """Item vectors ``[N, d]`` of video ids ``[N]``."""
        return self.network.item_vectors(items)


def din_graphs(network: DIN, feature_sizes: dict[str, int]) -> list[tuple[GraphSpec, nn.Module]]:
    """The graph of a DIN (``din``)."""
    metadata = {"network": "DIN", "feature_sizes": dict(feature_sizes), "competing": network.competing is not None}
    spec = _scoring_spec(
        "din",
        feature_sizes,
        metadata,
        "DIN logit of each candidate (sigmoid: effective-view probability); any value on padding",
        "DIN candidate scoring: the request's share once per request, then every candidate.",
    )
    return [(spec, CandidateGraph(network))]


def dssm_graphs(network: DSSM, feature_sizes: dict[str, int]) -> list[tuple[GraphSpec, nn.Module]]:
    """The graphs of a DSSM: ``dssm_user_tower``, ``dssm_item_tower`` and ``dssm`` (the candidates' logits)."""
    competing = network.competing is not None
    width = network.user_tower[-1].out_features
    metadata = {"network": "DSSM", "feature_sizes": dict(feature_sizes), "competing": competing, "width": width}
    user_spec = GraphSpec(
        name="dssm_user_tower",
        kind="network",
        inputs=request_inputs(feature_sizes, competing),
        outputs=[TensorSpec("user_vector", "float32", ("requests", width), "user-tower output")],
        dims=_dims(competing, "requests", "seq_len"),
        metadata=metadata,
        description="DSSM user tower: one vector per request.",
    )
    item_spec = GraphSpec(
        name="dssm_item_tower",
        kind="network",
        inputs=[_ids("items", ("items", 8), ITEM_FEATURES, feature_sizes, "item features (+1)")],
        outputs=[TensorSpec("item_vector", "float32", ("items", width), "item-tower output")],
        dims=_dims(False, "items"),
        metadata=metadata,
        description="DSSM item tower; a logit is the inner product of a user vector and an item vector.",
    )
    score_spec = _scoring_spec(
        "dssm",
        feature_sizes,
        metadata,
        "inner product of the request's user vector and each candidate's item vector",
        "DSSM candidate scoring: the user tower once per request, the item tower on every candidate.",
    )
    return [
        (user_spec, DSSMUserGraph(network)),
        (item_spec, DSSMItemGraph(network)),
        (score_spec, CandidateGraph(network)),
    ]


def sasrec_graphs(network: SASRec, feature_sizes: dict[str, int]) -> list[tuple[GraphSpec, nn.Module]]:
    """The graphs of a SASRec: ``sasrec_user_tower`` and ``sasrec_item_embeddings``."""
    videos = int(feature_sizes["video_id"])
    length = min(SEQ_LEN, network.max_len)
    dims = {
        "requests": DIMS["requests"],
        "seq_len": DimSpec(
            "seq_len", max=network.max_len, example=length, description="behaviours per request (left-padded)"
        ),
        "items": DIMS["items"],
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
