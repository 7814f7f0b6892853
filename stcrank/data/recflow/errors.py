"""Errors raised when RecFlow files do not have the expected layout or content."""

from __future__ import annotations

from stcrank.errors import StcrankError


class RecFlowFormatError(StcrankError, ValueError):
    """A RecFlow file is missing, truncated, corrupt, or lacks a column of the expected type.

    The message always names the file and, where one is at fault, the column, and says what was expected.
    """


class MissingDayError(RecFlowFormatError):
    """A day of the release lacks one of its required files (or the whole day is absent)."""


class StoreDestinationError(StcrankError, FileExistsError):
    """The destination of an import cannot be written: it holds other files, is the release, or is in use.

    The message names the directory and the option to change (``--dst``, ``--overwrite true``).
    """
