"""Hypothesis strategies derived from schema type hints, for every registered message.

Built from the same annotations the codecs are compiled from, so a message type that
another subsystem registers later is covered by the round-trip, bit-flip, truncation
and fuzz tests without anyone writing a strategy for it. Sizes are capped (a few items
per sequence, a few dozen bytes per string) to keep examples fast; the bounds
themselves are tested by the corpus, not by generation.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from hypothesis import strategies as st

from protocol.limits import MAX_ARRAY_LEN, MAX_BIN_LEN, MAX_INT, MAX_STR_LEN, MIN_INT
from protocol.messages import load_all
from protocol.schema import IntRange, Len, registered_messages

#: Extra items/bytes a generated value may have beyond a field's minimum.
SEQ_SLACK = 3
BYTES_SLACK = 48
STR_SLACK = 24


def message_classes() -> list[type[Any]]:
    """Every registered message type, ordered by tag (load_all makes the table complete)."""
    load_all()
    return [cls for _, cls in sorted(registered_messages().items())]


def _bounded(lo: int, hi: int, slack: int) -> tuple[int, int]:
    return lo, min(hi, lo + slack)


def _utf8_text(lo: int, hi: int) -> st.SearchStrategy[str]:
    """Strings whose UTF-8 length (the schema's measure) lies in [lo, hi]."""

    def fit(s: str) -> str:
        raw = s.encode("utf-8")[:hi].decode("utf-8", "ignore")
        return raw + "a" * max(0, lo - len(raw.encode("utf-8")))

    _, mx = _bounded(lo, hi, STR_SLACK)
    return st.text(min_size=0, max_size=mx).map(fit)


def _finite_floats() -> st.SearchStrategy[float]:
    # Zero is always +0.0 on the wire; -0.0 is normalised by the encoder.
    return st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f if f != 0.0 else 0.0)


def strategy_for(tp: Any, bound: Any = None) -> st.SearchStrategy[Any]:
    """A strategy producing valid values of schema type `tp` (mirrors schema._codec_for)."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extras = get_args(tp)
        bounds = [e for e in extras if isinstance(e, (IntRange, Len))]
        return strategy_for(base, bounds[0] if bounds else None)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return st.none() | strategy_for(inner, bound)
    if origin is tuple:
        items = get_args(tp)
        if len(items) == 2 and items[1] is Ellipsis:
            ln = bound if isinstance(bound, Len) else Len(0, MAX_ARRAY_LEN)
            lo, hi = _bounded(ln.lo, ln.hi, SEQ_SLACK)
            return st.lists(strategy_for(items[0]), min_size=lo, max_size=hi).map(tuple)
        return st.tuples(*[strategy_for(a) for a in items])
    if tp is bool:
        return st.booleans()
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        return st.sampled_from(list(tp))
    if tp is int:
        rng = bound if isinstance(bound, IntRange) else IntRange(MIN_INT, MAX_INT)
        return st.integers(rng.lo, rng.hi)
    if tp is bytes:
        ln = bound if isinstance(bound, Len) else Len(0, MAX_BIN_LEN)
        lo, hi = _bounded(ln.lo, ln.hi, BYTES_SLACK)
        return st.binary(min_size=lo, max_size=hi)
    if tp is str:
        ln = bound if isinstance(bound, Len) else Len(0, MAX_STR_LEN)
        return _utf8_text(ln.lo, ln.hi)
    if tp is float:
        return _finite_floats()
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return record_strategy(tp)
    raise TypeError(f"no strategy for schema type {tp!r}")


def _build_or_none(cls: type[Any], args: tuple[Any, ...]) -> Any:
    """Records may validate themselves in __post_init__; invalid draws are discarded."""
    try:
        return cls(*args)
    except Exception:
        return None


@cache
def record_strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Valid instances of a schema dataclass, field strategies taken from its hints."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    parts = st.tuples(*[st.deferred(lambda h=hints[f.name]: strategy_for(h)) for f in fields])
    return parts.map(lambda args: _build_or_none(cls, args)).filter(lambda v: v is not None)


def any_message() -> st.SearchStrategy[Any]:
    """An instance of any registered message type."""
    return st.sampled_from(message_classes()).flatmap(record_strategy)
