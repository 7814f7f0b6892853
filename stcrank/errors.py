"""The error types stcrank raises for problems a user can fix.

Every error a user can act on (a bad file, a wrong option, an unknown plugin, a setting that does not fit the
data) is a :class:`StcrankError`. The ``stcrank`` command line prints such an error as one line naming the file or
option and what to do, and exits non-zero (:attr:`StcrankError.exit_code`); the traceback appears only with
``--debug`` or ``STCRANK_DEBUG=1``. Anything else escaping is a bug in stcrank and keeps its traceback.

Each concrete error also subclasses the built-in exception it refines (``ValueError``, ``LookupError``...), so
callers that catch those keep working.
"""

from __future__ import annotations


class StcrankError(Exception):
    """Base of the errors a user can fix; the message says what was found and what to do.

    Attributes:
        exit_code: The status the command line exits with (1; 2 for a wrong option or setting).
    """

    exit_code: int = 1


class ConfigError(StcrankError, ValueError):
    """Settings that cannot work together, or a setting that does not fit the data it meets.

    The message names the option as a user types it on the command line (``--model.loss``) and the value to
    change it to.
    """

    exit_code = 2


class UsageError(ConfigError):
    """The command line itself is wrong: an unknown command or option, a value of the wrong type, a missing file.

    Raised by the command line's argument parsers in place of printing the usage and exiting.
    """


class TrainingError(StcrankError, RuntimeError):
    """Training runs but cannot produce a meaningful model (e.g. a loss with no gradient)."""
