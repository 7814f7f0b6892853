"""Shared fixtures: fake installed distributions for registry tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stcrank import registry


@pytest.fixture
def fake_distribution(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Install throwaway distributions (dist-info only, plus optional modules) on ``sys.path``.

    Each goes after site-packages by default (the installed plugins are found first), or before it with
    ``first=True``, so that it is discovered before stcrank itself.
    """
    roots: list[str] = []

    def install(name: str, entry_points: str, modules: dict[str, str] | None = None, first: bool = False) -> Path:
        root = tmp_path / f"site-{len(roots)}"
        root.mkdir()
        roots.append(str(root))
        if first:
            sys.path.insert(0, str(root))
        else:
            sys.path.append(str(root))
        info = root / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(entry_points)
        for module, source in (modules or {}).items():
            (root / f"{module}.py").write_text(source)
        registry.refresh()
        return root

    yield install
    for root in roots:
        sys.path.remove(root)
        inside = root + os.sep
        loaded = [name for name, mod in sys.modules.items() if (getattr(mod, "__file__", "") or "").startswith(inside)]
        for module in loaded:
            del sys.modules[module]
    registry.refresh()


@pytest.fixture(scope="session")
def recflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny RecFlow dataset, generated in the official layout and imported, as a user would (once a session)."""
    from stcrank.data.recflow.importer import import_recflow
    from stcrank.data.recflow.synth import synth_recflow

    root = tmp_path_factory.mktemp("recflow")
    synth_recflow(out=str(root / "release"), users=120, days=3, seed=0)
    import_recflow(src=str(root / "release"), dst=str(root / "store"))
    return root / "store"


@pytest.fixture(scope="session")
def eshop_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny simulated e-shop log directory (F log, E log, manifest), generated once a session."""
    from stcrank.data.eshop.synth import synth_eshop

    root = tmp_path_factory.mktemp("eshop") / "logs"
    synth_eshop(out=str(root), users=200, sessions=1500, items=1000, candidates=60, seed=0)
    return root
