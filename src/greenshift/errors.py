"""One exception hierarchy for everything a user can get wrong.

The CLI turns any :class:`GreenshiftError` into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class GreenshiftError(Exception):
    """Base class of all errors caused by user input, files or settings."""


class ConfigError(GreenshiftError, ValueError):
    """A hyperparameter, option or search space is invalid.

    ``fields`` names the settings the message mentions by their Python names (``max_epochs``); a front
    end that calls them something else (the CLI: ``--max-epochs``) may rename them when it shows the
    message. The message itself is complete without them.
    """

    def __init__(self, message: str = "", *, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = tuple(fields)


class DataError(GreenshiftError):
    """A data set is missing, corrupt or in an unexpected format."""


class ModelError(GreenshiftError, KeyError):
    """An unknown backbone or an impossible model request."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreError(GreenshiftError):
    """A run directory or its database cannot be used as asked."""


class ExportError(GreenshiftError):
    """An exported model file is missing, damaged or of another version."""


class MeasurementError(GreenshiftError):
    """An energy meter could not produce a trustworthy reading."""
