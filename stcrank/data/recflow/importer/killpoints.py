"""Named points where a test can make the import kill itself, to check that a re-run repairs what a kill leaves.

Set ``STCRANK_IMPORT_KILL_AT`` to a point's name (``chunk``, ``day-tables``, ``day-committed``, ``ubm``,
``official-tests``, ``manifest``, ``swap``) and the import sends itself ``SIGKILL`` there, the first time it
reaches it, as the out-of-memory killer or ``kill -9`` would. The variable is meant for tests; unset, the points cost
one dictionary lookup each.
"""

from __future__ import annotations

import os
import signal

KILL_AT_VARIABLE = "STCRANK_IMPORT_KILL_AT"
"""The environment variable naming the point to die at."""

KILL_POINTS: tuple[str, ...] = ("chunk", "day-tables", "ubm", "day-committed", "official-tests", "manifest", "swap")
"""Points of the import, in the order it reaches them (``chunk`` only when days are streamed)."""


def kill_point(name: str) -> None:
    """SIGKILL this process if ``STCRANK_IMPORT_KILL_AT`` names this point."""
    if os.environ.get(KILL_AT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
