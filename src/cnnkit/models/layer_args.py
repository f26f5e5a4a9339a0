"""The argument checks of layer specs: each returns the normalised value or raises
ValueError("must be ..."), which the parser turns into one line naming the layer."""

from __future__ import annotations

from typing import Any


def int_at_least(v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError("must be a positive integer" if minimum else "must be an integer >= 0")
    return v


def positive_int(v: Any) -> int:
    return int_at_least(v, 1)


def optional_positive_int(v: Any) -> int | None:
    return None if v is None else positive_int(v)


def pair(v: Any, minimum: int = 1) -> int | list[int]:
    """An int or an (h, w) pair ([3, 5] or "3x5"); stored as an int when square."""
    if isinstance(v, str) and "x" in v:
        try:
            v = [int(p) for p in v.lower().split("x")]
        except ValueError:
            raise ValueError("must be an integer or HxW") from None
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError("must be an integer or a pair [h, w]")
        h, w = (int_at_least(p, minimum) for p in v)
        return h if h == w else [h, w]
    return int_at_least(v, minimum)


def optional_pair(v: Any) -> int | list[int] | None:
    return None if v is None else pair(v)


def padding(v: Any) -> str | int | list[int]:
    if isinstance(v, str) and v.lower() in ("valid", "same"):
        return v.lower()
    try:
        return pair(v, minimum=0)
    except ValueError:
        raise ValueError("must be 'valid', 'same' or an integer") from None


def rate(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ValueError("must be a number in [0, 1)")
    return float(v)


def number(v: Any) -> float:
    if isinstance(v, str):
        try:
            return float(v)  # YAML reads 1e-3 (no dot) as a string
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("must be a number")
    return float(v)


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def hw(v: int | list[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[1])


def size_text(v: int | list[int]) -> str:
    h, w = hw(v)
    return str(h) if h == w else f"{h}x{w}"


def upsample_mode(v: Any) -> str:
    if not isinstance(v, str) or v.lower() not in ("nearest", "bilinear"):
        raise ValueError("must be nearest or bilinear")
    return v.lower()
