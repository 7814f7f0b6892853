"""How well a day's files match each other: every join between Feather rows and pickles is counted and checked.

A day's files are joined on request ids (``all_stage`` with ``realshow``, the requests with
``seq_effective_50_dict``, the past requests the sequences reference with ``ubm_seq_request_id_dict``) and on video
ids (the exposures with ``realshow_video_info_daily``). A file of another day, or one cut short, joins few or none:
without a check the import would succeed with every request losing its sequence. So each join records its coverage
in the manifest, a partial one logs a warning with the counts, and one under ``min_join_coverage`` (the
``--min_join_coverage`` option, 0.5 by default) stops the import naming the file and the counts.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stcrank.data.recflow.errors import RecFlowFormatError

logger = logging.getLogger(__name__)

DEFAULT_MIN_JOIN_COVERAGE = 0.5
"""Default smallest fraction of a day's keys a joined file must match."""


def check_coverage(
    path: Path, day: str, found: int, total: int, what: str, missing: str, min_coverage: float
) -> float | None:
    """Check one join; returns its coverage (None when there was nothing to join).

    Args:
        path: The file joined to the day (named in the message).
        day: The day.
        found: Keys of the day that the file matches.
        total: Keys of the day.
        what: The day's keys, e.g. ``"requests"``.
        missing: What a key without a match lacks, e.g. ``"behaviour sequence"``.
        min_coverage: The smallest accepted ``found / total``.

    Raises:
        RecFlowFormatError: When ``found / total < min_coverage``.
    """
    if total == 0:
        return None
    coverage = found / total
    if coverage < min_coverage:
        raise RecFlowFormatError(
            f"{path}: matches {found:,} of the {total:,} {what} of {day} ({coverage:.1%}), under "
            f"--min_join_coverage {min_coverage:g}; the file may be of another day or incomplete (pass "
            "--min_join_coverage 0 to import it anyway, the others get no match)"
        )
    if found < total:
        logger.warning(
            "%s: %d of the %d %s of %s (%.1f%%) have no match there; they get no %s",
            path,
            total - found,
            total,
            what,
            day,
            100 * (total - found) / total,
            missing,
        )
    return round(coverage, 6)
