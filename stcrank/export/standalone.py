"""Load and run an stcrank serving artefact without stcrank: schema checks, then onnxruntime or torch.

``stcrank export`` writes a copy of this module next to every artefact, as ``stcrank_serving.py``. It needs
numpy and one runtime (``onnxruntime`` for ``.onnx``, ``torch`` for ``.pt2``), nothing of stcrank::

    import stcrank_serving

    model = stcrank_serving.load("exported/din.onnx", threads=1)
    print(model.schema["inputs"])           # names, dtypes, shapes, column names, id table sizes
    outputs = model.run(context=..., user=..., seq=..., seq_mask=..., candidates=...)   # numpy in, numpy out

Every artefact carries its schema (the ONNX model's ``metadata_props``, the ``.pt2`` file's extra files, and the
``<name>.schema.json`` file beside it). Before running, :meth:`Artefact.run` checks every input against it and
raises :class:`ServingInputError` naming the input and what was expected: a missing or unknown input, a wrong
dtype or rank, a size that differs from a fixed size, a named dimension whose sizes disagree between inputs or
leave its range, ids outside their embedding table, and float values outside their documented range (e.g. a
continuation probability outside ``[0, 1]``) or not finite. The networks themselves would otherwise return a
number for many of these (an id past its table reads another row in some runtimes), so the check is on by default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_FORMAT = "stcrank.serving"
"""Value of the schema's ``format`` key."""
SCHEMA_VERSION = 1
"""Version of the schema layout this module reads."""
SCHEMA_KEY = "stcrank.schema"
"""Key of the schema JSON in an ONNX model's ``metadata_props`` and in a ``.pt2`` file's extra files."""


class ServingInputError(ValueError):
    """An input does not match the artefact's schema; the message names the input and what was expected."""


class ServingFormatError(ValueError):
    """A file is not an stcrank serving artefact, or was written with a schema version this module cannot read."""


def _describe(spec: Mapping[str, Any]) -> str:
    return f"{spec['dtype']}[{', '.join(str(d) for d in spec['shape'])}]"


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        return value.detach().cpu().numpy()
    return np.asarray(value)


def check_inputs(schema: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, int]:
    """Check inputs against an artefact's schema.

    Args:
        schema: The artefact's schema (see the module docs).
        inputs: Input name -> array (numpy or torch).

    Returns:
        The size of every named dimension, e.g. ``{"requests": 2, "candidates": 800}``.

    Raises:
        ServingInputError: On the first mismatch (see the module docs for what is checked).
    """
    specs = {spec["name"]: spec for spec in schema["inputs"]}
    missing = [name for name in specs if name not in inputs]
    unknown = [name for name in inputs if name not in specs]
    if missing or unknown:
        expected = ", ".join(f"{name} {_describe(spec)}" for name, spec in specs.items())
        raise ServingInputError(f"inputs missing {missing} and unknown {unknown}; the artefact takes: {expected}")
    sizes: dict[str, tuple[int, str]] = {}
    dims = schema.get("dims", {})
    for name, spec in specs.items():
        array = _to_numpy(inputs[name])
        what = f"input {name!r}: expected {_describe(spec)}"
        if str(array.dtype) != spec["dtype"]:
            raise ServingInputError(f"{what}, got dtype {array.dtype}")
        if array.ndim != len(spec["shape"]):
            raise ServingInputError(f"{what}, got shape {list(array.shape)} ({array.ndim} dimensions)")
        for axis, (dim, size) in enumerate(zip(spec["shape"], array.shape, strict=True)):
            if isinstance(dim, int):
                if size != dim:
                    raise ServingInputError(f"{what}, got shape {list(array.shape)} (axis {axis} must be {dim})")
                continue
            if dim in sizes and sizes[dim][0] != size:
                seen, where = sizes[dim]
                raise ServingInputError(
                    f"{what}, got shape {list(array.shape)}: {dim} is {size} here but {seen} in input {where!r}"
                )
            sizes.setdefault(dim, (size, name))
            low, high = dims.get(dim, {}).get("min"), dims.get(dim, {}).get("max")
            if (low is not None and size < low) or (high is not None and size > high):
                bounds = f"[{low}, {'inf' if high is None else high}]"
                raise ServingInputError(f"{what}, got shape {list(array.shape)}: {dim} = {size} is outside {bounds}")
        _check_values(name, spec, array)
    return {dim: size for dim, (size, _) in sizes.items()}


def _check_values(name: str, spec: Mapping[str, Any], array: np.ndarray) -> None:
    if array.size == 0:
        return
    table = spec.get("id_size")
    if table is not None and (array.min() < 0 or array.max() >= table):
        raise ServingInputError(
            f"input {name!r}: ids in [{array.min()}, {array.max()}] but its embedding table has {table} rows "
            "(0 is padding); map unseen ids to 0"
        )
    tables = spec.get("id_sizes")
    if tables is not None:
        flat = array.reshape(-1, array.shape[-1])
        low, high = flat.min(0), flat.max(0)
        for column, (lo, hi, size) in enumerate(zip(low.tolist(), high.tolist(), tables, strict=True)):
            if size is not None and (lo < 0 or hi >= size):
                label = spec["columns"][column] if spec.get("columns") else f"column {column}"
                raise ServingInputError(
                    f"input {name!r}, {label} (last axis position {column}): ids in [{lo}, {hi}] but its embedding "
                    f"table has {size} rows (0 is padding); map unseen ids to 0"
                )
    bounds = spec.get("range")
    if bounds is not None:
        if not np.isfinite(array).all():
            raise ServingInputError(f"input {name!r}: holds NaN or an infinity; every value must be finite")
        low, high = bounds
        if (low is not None and array.min() < low) or (high is not None and array.max() > high):
            raise ServingInputError(
                f"input {name!r}: values in [{array.min()}, {array.max()}] but they must lie in [{low}, {high}]"
            )


def artefact_stem(path: Path) -> str:
    """The graph's name: the file name without ``.onnx``, ``.pt2`` or ``.aoti.pt2``."""
    for suffix in (".aoti.pt2", ".pt2", ".onnx"):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def read_schema(path: str | os.PathLike) -> dict[str, Any]:
    """The schema of an artefact: its ``.schema.json`` file, else the one embedded in the ``.onnx``/``.pt2`` file.

    Raises:
        ServingFormatError: If no schema is found or its version is not :data:`SCHEMA_VERSION`.
    """
    path = Path(path)
    sidecar = path.with_name(f"{artefact_stem(path)}.schema.json")
    if sidecar.is_file():
        schema = json.loads(sidecar.read_text())
    elif path.suffix == ".onnx":
        import onnx

        props = {prop.key: prop.value for prop in onnx.load(str(path), load_external_data=False).metadata_props}
        if SCHEMA_KEY not in props:
            raise ServingFormatError(f"{path}: no {SCHEMA_KEY!r} in the model's metadata_props")
        schema = json.loads(props[SCHEMA_KEY])
    elif path.suffix == ".pt2":
        import zipfile

        with zipfile.ZipFile(path) as archive:
            found = [item for item in archive.namelist() if item.endswith(f"extra/{SCHEMA_KEY}")]
            if not found:
                raise ServingFormatError(f"{path}: no {SCHEMA_KEY!r} extra file in the archive")
            schema = json.loads(archive.read(found[0]))
    else:
        raise ServingFormatError(f"{path}: expected an .onnx or .pt2 file")
    if schema.get("format") != SCHEMA_FORMAT or schema.get("version") != SCHEMA_VERSION:
        raise ServingFormatError(
            f"{path}: schema format {schema.get('format')!r} version {schema.get('version')!r}; this loader reads "
            f"{SCHEMA_FORMAT!r} version {SCHEMA_VERSION}"
        )
    return schema


class Artefact:
    """An exported graph with its schema, run by onnxruntime (``.onnx``) or torch (``.pt2``, ``.aoti.pt2``).

    Args:
        path: The ``.onnx``, ``.pt2`` or ``.aoti.pt2`` (AOTInductor package) file.
        threads: Intra-op threads (onnxruntime's ``intra_op_num_threads``, or ``torch.set_num_threads``); the
            runtime's default when None.
        check: Check every input against the schema before running (see the module docs).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, check: bool = True) -> None:
        self.path = Path(path)
        self.schema = read_schema(self.path)
        self.check = check
        self.input_names = [spec["name"] for spec in self.schema["inputs"]]
        self.output_names = [spec["name"] for spec in self.schema["outputs"]]
        if self.path.suffix == ".onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            if threads is not None:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            self.runtime = "onnxruntime"
            self._session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        else:
            import torch

            if threads is not None:
                torch.set_num_threads(threads)
            if self.path.name.endswith(".aoti.pt2"):
                self.runtime = "aoti"
                self._module = torch._inductor.aoti_load_package(str(self.path))
            else:
                self.runtime = "torch"
                self._module = torch.export.load(str(self.path)).module()

    def run(self, **inputs: Any) -> dict[str, np.ndarray]:
        """Check the inputs (numpy arrays or torch tensors) and run; returns output name -> numpy array."""
        if self.check:
            check_inputs(self.schema, inputs)
        if self.runtime == "onnxruntime":
            feeds = {name: _to_numpy(inputs[name]) for name in self.input_names}
            return dict(zip(self.output_names, self._session.run(self.output_names, feeds), strict=True))
        import torch

        tensors = [torch.as_tensor(_to_numpy(inputs[name])) for name in self.input_names]
        with torch.no_grad():
            out = self._module(*tensors)
        out = out if isinstance(out, tuple | list) else (out,)
        return {name: value.numpy() for name, value in zip(self.output_names, out, strict=True)}

    __call__ = run


def load(path: str | os.PathLike, threads: int | None = None, check: bool = True) -> Artefact:
    """Load an artefact (see :class:`Artefact`)."""
    return Artefact(path, threads=threads, check=check)
