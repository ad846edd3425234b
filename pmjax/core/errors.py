"""Errors that the command line reports as one line."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: a file, field or value the user can fix. The CLI prints it and exits 2."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        where = ", ".join(p for p in (source, f"field {field}" if field else None) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.field = field


class MissingDependency(RuntimeError):
    """An optional dependency a command needs is not installed. The CLI prints it (how to install) and exits 1."""
