"""Write a traced graph as a ``torch.export`` program (``.pt2``) and as ONNX (``.onnx``), with its schema.

* ``pt2``: :func:`torch.export.export` traces the graph (non-strict, under ``torch.no_grad``, with one
  :class:`torch.export.Dim` per named dimension) and :func:`torch.export.save` writes the ``ExportedProgram``, the
  schema JSON in its extra files. torch loads it with :func:`torch.export.load` alone. ``torch.export`` is the
  maintained whole-graph capture of torch 2.x; TorchScript is in maintenance mode, so it is not offered.
* ``onnx``: the same ``ExportedProgram`` goes through :func:`torch.onnx.export` (``dynamo=True``, the current
  exporter, built on onnxscript), and the schema JSON lands in the model's ``metadata_props``.
* ``aoti`` (optional): the program compiled ahead of time by AOTInductor into a ``.aoti.pt2`` package (needs a
  C++ compiler at export time; loaded by ``torch._inductor.aoti_load_package`` in Python or by
  ``torch::inductor::AOTIModelPackageLoader`` in C++).

Beside each graph go ``<name>.schema.json`` (the same schema, for people and for the loader) and
``stcrank_serving.py`` (:mod:`stcrank.export.standalone`, the loader that checks inputs against the schema).

ONNX has no stable sort, and ``aten.sort.stable`` has no ONNX translation: it is written as ``TopK`` over the
whole axis, which ONNX specifies to keep equal values in index order, the order ``torch.sort(stable=True)`` gives.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import ExportedProgram

from stcrank.errors import StcrankError
from stcrank.export import standalone
from stcrank.export.schema import GraphSpec

FORMATS = ("onnx", "pt2", "aoti")
"""Formats :func:`write_graph` writes."""
DEFAULT_FORMATS = ("onnx", "pt2")
"""Formats written unless others are asked for."""
LOADER_NAME = "stcrank_serving.py"
"""File name of the standalone loader written next to the artefacts."""


class ExportError(StcrankError, ValueError):
    """A model, re-ranker or option that cannot be exported; the message says what to change."""


def _sort_stable(self: Any, stable: bool | None = None, dim: int = -1, descending: bool = False) -> Any:
    """ONNX translation of ``aten.sort.stable``: ``TopK`` over the whole axis (ONNX breaks ties by index)."""
    from onnxscript import opset18 as op

    size = op.Reshape(op.Gather(op.Shape(self), dim, axis=0), op.Constant(value_ints=[1]))
    values, indices = op.TopK(self, size, axis=dim, largest=descending, sorted=True)
    return values, indices


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The exporters print progress lines and warn about optional packages (torchvision): not a user's business.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def trace(spec: GraphSpec, module: nn.Module) -> ExportedProgram:
    """Trace a graph with ``torch.export`` on its example inputs, every named dimension symbolic.

    Args:
        spec: The graph's schema (inputs, dimensions, example sizes).
        module: The tensor-only module; called with the inputs in the schema's order.

    Returns:
        The exported program, in inference mode (no autograd in the graph).
    """
    module = module.eval()
    with torch.no_grad(), _quiet():
        program = torch.export.export(module, spec.example_inputs(), dynamic_shapes=spec.dynamic_shapes())
        return program.run_decompositions({})


def write_pt2(spec: GraphSpec, program: ExportedProgram, folder: Path) -> Path:
    """Save the program as ``<name>.pt2`` with the schema in its extra files."""
    path = folder / f"{spec.name}.pt2"
    torch.export.save(program, path, extra_files={standalone.SCHEMA_KEY: json.dumps(spec.schema())})
    return path


def write_onnx(spec: GraphSpec, program: ExportedProgram, folder: Path) -> Path:
    """Convert the program to ONNX as ``<name>.onnx``, the schema in ``metadata_props``."""
    import onnx

    path = folder / f"{spec.name}.onnx"
    with _quiet():
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            input_names=[tensor.name for tensor in spec.inputs],
            output_names=[tensor.name for tensor in spec.outputs],
            custom_translation_table={torch.ops.aten.sort.stable: _sort_stable},
            optimize=True,
            verbose=False,
        )
    model = onnx_program.model_proto
    model.doc_string = spec.description
    entry = model.metadata_props.add()
    entry.key, entry.value = standalone.SCHEMA_KEY, json.dumps(spec.schema())
    onnx.save(model, str(path))
    return path


def write_aoti(spec: GraphSpec, program: ExportedProgram, folder: Path) -> Path:
    """Compile the program with AOTInductor into ``<name>.aoti.pt2`` (needs a C++ compiler)."""
    path = folder / f"{spec.name}.aoti.pt2"
    with _quiet():
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return path


WRITERS = {"onnx": write_onnx, "pt2": write_pt2, "aoti": write_aoti}


def write_graph(spec: GraphSpec, module: nn.Module, folder: str | Path, formats: tuple[str, ...] = DEFAULT_FORMATS):
    """Trace a graph once and write it in every format, with its schema file and the standalone loader.

    Args:
        spec: The graph's schema.
        module: The tensor-only module.
        folder: Where the files go (created if needed).
        formats: Some of :data:`FORMATS`.

    Returns:
        Format (and ``"schema"``, ``"loader"``) -> the written path.

    Raises:
        ExportError: On an unknown format.
    """
    unknown = [name for name in formats if name not in WRITERS]
    if unknown or not formats:
        raise ExportError(f"--formats {' '.join(formats)}: choose among {', '.join(FORMATS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    program = trace(spec, module)
    files = {name: WRITERS[name](spec, program, folder) for name in formats}
    files["schema"] = folder / f"{spec.name}.schema.json"
    files["schema"].write_text(json.dumps(spec.schema(), indent=2) + "\n")
    files["loader"] = folder / LOADER_NAME
    shutil.copyfile(standalone.__file__, files["loader"])
    return files
