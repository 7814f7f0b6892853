"""Preparing the store directory and committing partitions and the manifest atomically."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stcrank.data.recflow.schema import DAYS_DIR, MANIFEST, OTHERS_DIR

logger = logging.getLogger(__name__)


def write_json_atomically(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so that the file is whole or absent."""
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=False))
    temporary.replace(path)


def prepare_destination(dst: Path, overwrite: bool) -> None:
    """Check and prepare the store directory (remove leftovers of killed imports)."""
    if dst.exists() and any(dst.iterdir()):
        if (dst / MANIFEST).exists() and not overwrite:
            raise FileExistsError(f"{dst} already holds a RecFlow store; pass overwrite=True to replace it")
        unknown = [p.name for p in dst.iterdir() if p.name not in (MANIFEST, DAYS_DIR, OTHERS_DIR)]
        if unknown and not overwrite:
            raise FileExistsError(f"{dst} is not empty ({unknown[:5]}); pass overwrite=True to replace it")
        if overwrite:
            shutil.rmtree(dst)
    (dst / DAYS_DIR).mkdir(parents=True, exist_ok=True)
    (dst / OTHERS_DIR).mkdir(parents=True, exist_ok=True)
    (dst / MANIFEST).unlink(missing_ok=True)  # the store is incomplete until the new manifest is written
    for leftover in (dst / DAYS_DIR).glob(".*.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def commit_partition(temporary: Path, final: Path) -> None:
    """Move a complete partition into place (an older partition of that day is replaced)."""
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(trash)
        temporary.rename(final)
        shutil.rmtree(trash)
    else:
        temporary.rename(final)
