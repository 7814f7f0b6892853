"""Fixtures of the RecFlow data tests: the session's generated release and store, and tiny throwaway releases."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stcrank.data.recflow.synth import synth_recflow

TINY = {
    "users": 20,
    "days": 2,
    "seed": 1,
    "items": 400,
    "retrieved": 60,
    "prerank_keep": 40,
    "coarse_keep": 25,
    "rank_keep": 15,
    "stage_samples": 3,
}
"""A release of a few hundred requests, generated in well under a second."""


@pytest.fixture(scope="session")
def recflow_release(recflow_store: Path) -> Path:
    """The release the session's store was imported from (same generation, see tests/conftest.py)."""
    return recflow_store.parent / "release"


@pytest.fixture
def make_release(tmp_path: Path) -> Callable[..., Path]:
    """Generate a tiny release under ``tmp_path`` (keyword arguments override :data:`TINY`)."""

    def make(name: str = "release", **overrides: object) -> Path:
        out = tmp_path / name
        synth_recflow(out=str(out), **{**TINY, **overrides})
        return out

    return make
