"""Typed errors that carry the process exit code, so `main()` maps them without guessing, and the one way an
error becomes the single line a user reads."""

from __future__ import annotations

import re


class ScoringError(Exception):
    """A failure while running (exit 1)."""

    exit_code = 1


class UsageError(ScoringError):
    """Bad input or usage, found before any data is read (exit 2)."""

    exit_code = 2


_PY_ERROR = re.compile(r"(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception): .+")
_JAVA_CAUSE = re.compile(r"(?:Caused by: |: )?((?:[a-z_]\w*\.)+[A-Z]\w*(?:Exception|Error)(?:: .*)?)\Z")
# key=value, key: value and "key": "value", the value quoted or up to a separator
_SECRET = re.compile(r"""(?i)(["']?\b(?:password|passwd|pwd|secret|token)["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^&;,\s]*)""")
_URL_PASSWORD = re.compile(r"(//[^/:@\s]+:)[^/\s]*@")  # up to the last @ of the authority


def one_line(e: BaseException) -> str:
    """The line that says what went wrong, with secrets masked. A failure in a Python worker: the worker's
    exception line. A Java failure behind py4j ('An error occurred while calling o76.jdbc.'): the innermost
    Java cause's message, which is the one that names the problem (a missing driver, a refused connection)."""
    text = str(e).strip()
    lines = text.splitlines()
    if "Traceback (most recent call last)" in text:
        raised = [line for line in lines if _PY_ERROR.fullmatch(line)
                  and not line.startswith(("org.", "java.", "scala."))]
        if raised:
            return mask(f"scoring failed in a Python worker: {raised[-1]}")
    if lines and lines[0].startswith("An error occurred while calling"):
        causes = [m.group(1) for m in map(_JAVA_CAUSE.match, lines) if m is not None]
        if causes:
            return mask(causes[-1])
    return mask((lines or [type(e).__name__])[0])


def mask(line: str) -> str:
    """Passwords and tokens in URLs or key=value text never reach a log or a terminal."""
    return _URL_PASSWORD.sub(r"\1***@", _SECRET.sub(lambda m: f"{m.group(1)}***", line))
