"""Read an e-shop log directory (manifest + F log + E log) and validate it against the schema."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stcrank.data.eshop.schema import (
    MANIFEST,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    TABLES,
    Column,
    EshopSchemaError,
    validate_table,
)


@dataclass(frozen=True)
class EshopLogs:
    """A validated log directory.

    Attributes:
        f_log: F-stage page views (canonical column types).
        e_log: Homepage exposures.
        manifest: The parsed manifest.
    """

    f_log: pa.Table
    e_log: pa.Table
    manifest: dict

    @property
    def feature_sizes(self) -> dict[str, int]:
        """Embedding-table size (padding row included) of every categorical column."""
        return dict(self.manifest["feature_sizes"])


def read_manifest(path: str | Path) -> dict:
    """Read and check the manifest of a log directory.

    Args:
        path: The directory (or the manifest file itself).

    Returns:
        The manifest.

    Raises:
        EshopSchemaError: If it is missing, not JSON, of another schema or a newer version, or lacks keys.
    """
    path = Path(path)
    file = path / MANIFEST if path.is_dir() else path
    if not file.is_file():
        raise EshopSchemaError(f"{file}: manifest not found (expected a {MANIFEST} next to the logs)")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EshopSchemaError(f"{file}: not valid JSON ({err})") from err
    if not isinstance(manifest, dict):
        raise EshopSchemaError(f"{file}: expected a JSON object")
    if manifest.get("schema") != SCHEMA_NAME:
        raise EshopSchemaError(f"{file}: schema is {manifest.get('schema')!r}; expected {SCHEMA_NAME!r}")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise EshopSchemaError(f"{file}: schema_version {version!r} is not supported (1..{SCHEMA_VERSION})")
    for key in ("files", "feature_sizes"):
        if not isinstance(manifest.get(key), dict):
            raise EshopSchemaError(f"{file}: key {key!r} missing or not an object")
    return manifest


def read_table(
    file: str | Path,
    columns: tuple[Column, ...],
    *,
    feature_sizes: dict[str, int] | None = None,
    read_columns: list[str] | None = None,
) -> pa.Table:
    """Read one Parquet log file and validate it.

    Args:
        file: The Parquet file.
        columns: Its schema's columns.
        feature_sizes: Embedding sizes to check ids against (optional).
        read_columns: Read only these columns (the required ones among them are checked).

    Returns:
        The validated table.

    Raises:
        EshopSchemaError: If the file is missing, unreadable (corrupt, truncated) or off-schema.
    """
    file = Path(file)
    if not file.is_file():
        raise EshopSchemaError(f"{file}: file not found")
    try:
        table = pq.read_table(file, columns=read_columns)
    except (pa.ArrowException, OSError) as err:
        raise EshopSchemaError(f"{file}: not a readable Parquet file ({err})") from err
    if read_columns is not None:
        columns = tuple(c for c in columns if c.name in read_columns)
    return validate_table(table, columns, file=str(file), feature_sizes=feature_sizes)


def read_eshop(path: str | Path, *, with_truth: bool = True) -> EshopLogs:
    """Read and validate an e-shop log directory.

    Args:
        path: Directory with ``manifest.json``, the F log and the E log.
        with_truth: Keep the simulator's ``truth_*`` columns (drop them to train as on real logs).

    Returns:
        The logs.

    Raises:
        EshopSchemaError: Naming the file and column at fault.
    """
    root = Path(path)
    manifest = read_manifest(root)
    tables = {}
    for name, (default_file, columns) in TABLES.items():
        file = root / manifest["files"].get(name, default_file)
        table = read_table(file, columns, feature_sizes=manifest["feature_sizes"])
        if not with_truth:
            table = table.drop_columns([c for c in table.column_names if c.startswith("truth_")])
        tables[name] = table
    return EshopLogs(f_log=tables["f_log"], e_log=tables["e_log"], manifest=manifest)
