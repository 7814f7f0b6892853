"""The input schema of an exported graph: named positional tensors, their dtypes, shapes and value ranges.

A :class:`GraphSpec` describes one exported graph: its inputs and outputs in call order (:class:`TensorSpec`),
the named dimensions they share (:class:`DimSpec`: ``requests``, ``candidates``... with their ranges) and free
metadata (the network's feature sizes, the column names). :meth:`GraphSpec.schema` turns it into the JSON
document every artefact carries, which :mod:`stcrank.export.standalone` checks inputs against;
:meth:`GraphSpec.dynamic_shapes` and :meth:`GraphSpec.example_inputs` give ``torch.export`` what it traces with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.export import Dim

import stcrank
from stcrank.export.standalone import SCHEMA_FORMAT, SCHEMA_VERSION

DTYPES: dict[str, torch.dtype] = {
    "int64": torch.int64,
    "float32": torch.float32,
    "float64": torch.float64,
    "bool": torch.bool,
}
"""Schema dtype name -> torch dtype (the names are numpy's, which the standalone loader compares with)."""


@dataclass(frozen=True)
class DimSpec:
    """A named dimension shared by inputs and outputs.

    Attributes:
        name: The name (``requests``, ``candidates``, ``seq_len``...).
        min: Smallest size the graph accepts.
        max: Largest size the graph accepts; unbounded when None.
        example: Size of the example inputs traced at export (distinct from the other dimensions' examples, and
            at least 2, so that tracing keeps the dimension symbolic).
        description: What the dimension counts.
    """

    name: str
    min: int = 1
    max: int | None = None
    example: int = 3
    description: str = ""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor.

    Attributes:
        name: Its name (the ONNX input/output name, the keyword of the standalone loader).
        dtype: A key of :data:`DTYPES`.
        shape: Fixed sizes (int) and named dimensions (str, a :class:`DimSpec` name).
        description: What it holds.
        columns: Names of the positions of the last axis (feature columns), if any.
        id_sizes: Embedding-table size of each last-axis column: ids must lie in ``[0, size)`` (None: any id, e.g.
            a count the network clamps).
        id_size: Embedding-table size every id of the tensor indexes (a tensor of one feature).
        range: ``(low, high)`` every (finite) value must lie in; None bounds nothing. Only for float tensors.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    description: str = ""
    columns: tuple[str, ...] | None = None
    id_sizes: tuple[int | None, ...] | None = None
    id_size: int | None = None
    range: tuple[float | None, float | None] | None = None

    def to_json(self) -> dict[str, Any]:
        """The schema entry of the tensor."""
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.description:
            out["description"] = self.description
        if self.columns is not None:
            out["columns"] = list(self.columns)
        if self.id_sizes is not None:
            out["id_sizes"] = [None if size is None else int(size) for size in self.id_sizes]
        if self.id_size is not None:
            out["id_size"] = int(self.id_size)
        if self.range is not None:
            out["range"] = list(self.range)
        return out


@dataclass
class GraphSpec:
    """What one exported graph takes and returns.

    Attributes:
        name: File stem of the artefact (``din``, ``sasrec_user_tower``, ``pipeline``...).
        kind: What it is (``network``, ``reranker``, ``pipeline``).
        inputs: Inputs in call order.
        outputs: Outputs in return order.
        dims: The named dimensions.
        metadata: Anything else a user needs to build the inputs (feature sizes, task names, the re-ranker's
            ``k``...), JSON-ready.
        description: One paragraph on what the graph computes.
    """

    name: str
    kind: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    dims: dict[str, DimSpec]
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def schema(self) -> dict[str, Any]:
        """The JSON schema document the artefact carries."""
        dims = {
            name: {"min": dim.min, "max": dim.max, "description": dim.description} for name, dim in self.dims.items()
        }
        return {
            "format": SCHEMA_FORMAT,
            "version": SCHEMA_VERSION,
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "inputs": [spec.to_json() for spec in self.inputs],
            "outputs": [spec.to_json() for spec in self.outputs],
            "dims": dims,
            "metadata": self.metadata,
            "stcrank_version": stcrank.__version__,
            "torch_version": torch.__version__.split("+")[0],
        }

    def dynamic_shapes(self) -> tuple[dict[int, Dim], ...]:
        """``torch.export`` dynamic shapes of the inputs, one :class:`torch.export.Dim` per named dimension."""
        dims = {name: Dim(name, min=spec.min, max=spec.max) for name, spec in self.dims.items()}
        return tuple(
            {axis: dims[size] for axis, size in enumerate(spec.shape) if isinstance(size, str)} for spec in self.inputs
        )

    def example_inputs(self, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
        """Random inputs of the example sizes, valid under the schema (ids inside their tables)."""
        generator = generator or torch.Generator().manual_seed(0)
        return tuple(self._example(spec, generator) for spec in self.inputs)

    def _example(self, spec: TensorSpec, generator: torch.Generator) -> Tensor:
        shape = tuple(size if isinstance(size, int) else self.dims[size].example for size in spec.shape)
        dtype = DTYPES[spec.dtype]
        if dtype == torch.bool:
            return torch.rand(shape, generator=generator) < 0.7
        if dtype == torch.int64:
            if spec.id_size is not None:
                return torch.randint(0, spec.id_size, shape, generator=generator)
            if spec.id_sizes is None:
                return torch.randint(0, 4, shape, generator=generator)
            high = torch.tensor([8 if size is None else size for size in spec.id_sizes], dtype=torch.float64)
            return (torch.rand(shape, generator=generator, dtype=torch.float64) * high).long()
        values = torch.rand(shape, generator=generator, dtype=dtype)
        return values if spec.range is not None else values * 4 - 1
