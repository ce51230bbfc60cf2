"""Typed errors that carry the process exit code, so `main()` maps them without guessing."""

from __future__ import annotations


class ScoringError(Exception):
    """A failure while running (exit 1)."""

    exit_code = 1


class UsageError(ScoringError):
    """Bad input or usage, found before any data is read (exit 2)."""

    exit_code = 2
