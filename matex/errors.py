"""Errors a user sees: each names the file, row or config key at fault."""

from __future__ import annotations


class MatexError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class ConfigError(MatexError):
    """A config key is unknown, missing or of the wrong type."""


class DataError(MatexError):
    """A data row or file is bad: missing or corrupt image, box outside the image, empty phrase."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None):
        where = []
        if file is not None:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.file = file
        self.row = row


class MapError(MatexError):
    """An attribution map is not finite or has the wrong shape."""


class StaleArtifactError(MatexError):
    """An input artifact was made with settings other than the ones the consuming step expects."""
