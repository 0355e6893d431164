"""Errors a user can fix. The CLI prints them as one line (no traceback) and exits 2.

Every library error about user input subclasses ``UserError`` so the CLI and the sweep can tell
"your input is wrong" from "mvlab has a bug"."""
from __future__ import annotations


class UserError(Exception):
    """Bad input: the message says what was wrong, where, and how to fix it."""


class SpecError(UserError, ValueError):
    """A malformed or impossible architecture spec (grammar string or preset)."""


class DataError(UserError):
    """Missing/invalid data roots, class lists or subsets."""


class StudyError(UserError):
    """A malformed study file or override; the message carries file, line and key."""


class TrainingFailed(Exception):
    """A run that cannot continue (NaN/inf loss, out of memory); ``reason`` is recorded."""

    def __init__(self, reason: str, kind: str = "error"):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # "nan", "oom", "error", "interrupted"
