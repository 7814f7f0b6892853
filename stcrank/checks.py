"""Checks of user settings that fail with a :class:`~stcrank.errors.ConfigError` naming the option.

A size of 0 builds a model that trains on nothing, and a cut-off of 0 a metric that means nothing; such settings
must fail at construction, naming the option as a user types it on the command line. The prefixes below are
where stcrank's components sit in a LightningCLI config: a network is the task's ``network`` argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

from stcrank.errors import ConfigError

NETWORK = "--model.init_args.network.init_args."
"""Option prefix of a network's settings."""
TASK = "--model.init_args."
"""Option prefix of a task's settings."""
DATA = "--data."
"""Option prefix of a data module's settings."""


def check_positive(owner: str, prefix: str, **settings: Real | Sequence[Real] | None) -> None:
    """Refuse any setting that is not positive: a number ``<= 0`` or a list holding one (None passes).

    Args:
        owner: The component, for the message (``"DIN"``).
        prefix: The option prefix (:data:`NETWORK`, :data:`TASK` or :data:`DATA`).
        **settings: The settings by parameter name.

    Raises:
        ConfigError: Naming the first setting that is not positive and its value.
    """
    for name, value in settings.items():
        values = value if isinstance(value, Sequence) else [value]
        if value is not None and any(not item > 0 for item in values):
            needed = "only positive numbers" if isinstance(value, Sequence) else "positive"
            raise ConfigError(f"{owner}: {prefix}{name} must be {needed}, got {value!r}")


def check_non_negative(owner: str, prefix: str, **settings: Real | None) -> None:
    """Refuse any setting below 0 (None passes); see :func:`check_positive`."""
    for name, value in settings.items():
        if value is not None and not value >= 0:
            raise ConfigError(f"{owner}: {prefix}{name} must be at least 0, got {value!r}")


def check_not_empty(owner: str, prefix: str, **settings: Sequence[object] | None) -> None:
    """Refuse an empty list (None passes: it means the default)."""
    for name, value in settings.items():
        if value is not None and len(value) == 0:
            raise ConfigError(f"{owner}: {prefix}{name} must not be empty; leave it out for the default")
