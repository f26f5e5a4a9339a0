"""The user-facing error: one clear line on stderr and exit code 2 (see cli.main)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnkitError(Exception):
    """A mistake the user can fix (bad path, unknown name, bad value, unreadable file).

    The CLI prints ``str(error)`` as one line and exits with ``exit_code``; internal bugs are
    never wrapped in this type, so they keep their tracebacks.
    """

    exit_code = 2


class ImageDecodeError(CnnkitError):
    """An image that cannot be read; the message is the reason ("truncated PNG", ...)."""


def did_you_mean(kind: str, name: str, choices: Iterable[str]) -> CnnkitError:
    """An 'unknown X' error naming the closest valid choice(s) and listing the rest."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    listing = ", ".join(choices) if len(choices) <= 25 else ", ".join(choices[:25]) + ", ..."
    return CnnkitError(f"unknown {kind} '{name}'{hint} (valid: {listing})")
