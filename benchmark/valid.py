"""Declared valid values of an option: a type plus a numeric range, a choice set or a shape.

Every profile field and every method hparam carries one `Valid`; `Valid.problem(value)` says
what is wrong with a value (or None) and `Valid.describe()` is the range printed in error
messages and in the option reference. Written by hand because the checks must name the key and
the range in one line and accept JSON-parsed CLI values (int for float, lists for tuples);
pydantic would add a dependency and multi-line error reports for a few dozen lines of logic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPLITS = ("train", "val", "test")


def _is_int(value: Any) -> bool:
    """An int that is not a bool (JSON true would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(x: float) -> str:
    """A bound as the user would type it (1e+06 -> 1000000, 0.5 -> 0.5)."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:g}"


@dataclass(frozen=True)
class Valid:
    """The valid values of one option (see the module docstring for the kinds)."""

    kind: str  # int | float | bool | choice | str | path | int_list | split_caps | fractions
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    min_len: int = 1
    max_len: int = 1
    none_ok: bool = False  # null / none is accepted (e.g. "no cap")
    none_means: str = ""

    # --- constructors ------------------------------------------------------------------------
    @classmethod
    def integer(cls, low: int, high: int, none_means: str = "") -> Valid:
        """An integer in [low, high]; with `none_means`, also null (meaning that)."""
        return cls("int", low, high, none_ok=bool(none_means), none_means=none_means)

    @classmethod
    def number(cls, low: float, high: float, low_open: bool = False,
              high_open: bool = False) -> Valid:
        """A finite number in the interval; ints are accepted."""
        return cls("float", low, high, low_open, high_open)

    @classmethod
    def flag(cls) -> Valid:
        """true or false."""
        return cls("bool")

    @classmethod
    def choice(cls, *options: str) -> Valid:
        """One of a fixed set of strings."""
        return cls("choice", choices=tuple(options))

    @classmethod
    def path(cls) -> Valid:
        """'' (none) or an existing file."""
        return cls("path")

    @classmethod
    def choice_or_path(cls, *options: str) -> Valid:
        """One of a few words (e.g. none, imagenet) or the path of an existing file."""
        return cls("choice_or_path", choices=tuple(options))

    @classmethod
    def text(cls) -> Valid:
        """Any non-empty string (plugins' string hparams without a declared choice set)."""
        return cls("str")

    @classmethod
    def int_list(cls, min_len: int, max_len: int, low: int, high: int) -> Valid:
        """A list of min_len..max_len integers, each in [low, high] (CLI: [2,2,2,2])."""
        return cls("int_list", low, high, min_len=min_len, max_len=max_len)

    @classmethod
    def split_caps(cls, low: int, high: int) -> Valid:
        """Per-split image caps: train:16,val:6,test:6 (any subset of the splits), or none."""
        return cls("split_caps", low, high, none_ok=True, none_means="no cap")

    @classmethod
    def fractions(cls) -> Valid:
        """Three train/val/test fractions, each in (0, 1), summing to 1."""
        return cls("fractions", 0, 1, True, True)

    @classmethod
    def infer(cls, default: Any) -> Valid:
        """A type-only declaration for an hparam that declares nothing (third-party plugins)."""
        if isinstance(default, bool):
            return cls.flag()
        if _is_int(default):
            return cls.integer(-(2**31), 2**31 - 1)
        if isinstance(default, float):
            return cls.number(-1e12, 1e12)
        if isinstance(default, list) and all(_is_int(v) for v in default):
            return cls.int_list(0, 64, -(2**31), 2**31 - 1)
        return cls.text()

    # --- description -------------------------------------------------------------------------
    def _interval(self) -> str:
        """The range in interval notation, e.g. '(0, 1]'."""
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"{left}{_fmt(self.low or 0)}, {_fmt(self.high or 0)}{right}"

    def describe(self) -> str:
        """The valid values in words, e.g. 'an integer in [1, 512]'."""
        none = f", or none ({self.none_means})" if self.none_ok and self.kind != "split_caps" \
            else ""
        if self.kind == "int":
            return f"an integer in {self._interval()}{none}"
        if self.kind == "float":
            return f"a number in {self._interval()}"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "path":
            return "'' (none) or the path of an existing file"
        if self.kind == "choice_or_path":
            words = ", ".join(c if c else "''" for c in self.choices)
            return f"{words} or the path of an existing file"
        if self.kind == "str":
            return "a non-empty string"
        if self.kind == "int_list":
            n = (str(self.min_len) if self.min_len == self.max_len
                 else f"{self.min_len} to {self.max_len}")
            return f"a list of {n} integers in {self._interval()}"
        if self.kind == "split_caps":
            return (f"split:count pairs such as train:16,val:6,test:6 (splits {', '.join(SPLITS)};"
                    f" counts in {self._interval()}), or none (no cap)")
        if self.kind == "fractions":
            return "three train,val,test fractions such as 0.7,0.1,0.2, each in (0, 1), sum 1"
        raise AssertionError(self.kind)

    # --- checking ----------------------------------------------------------------------------
    def _range_problem(self, x: float) -> str | None:
        if not math.isfinite(x):
            return "not a finite number"
        lo, hi = self.low, self.high
        if lo is not None and (x < lo or (self.low_open and x == lo)):
            return "out of range"
        if hi is not None and (x > hi or (self.high_open and x == hi)):
            return "out of range"
        return None

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` ('out of range', 'not an integer', ...) or None."""
        if value is None:
            return None if self.none_ok else "a value is required"
        kind = self.kind
        if kind == "int":
            return self._range_problem(value) if _is_int(value) else "not an integer"
        if kind == "float":
            return self._range_problem(float(value)) if _is_number(value) else "not a number"
        if kind == "bool":
            return None if isinstance(value, bool) else "not true/false"
        if kind == "choice":
            return None if isinstance(value, str) and value in self.choices else "not a choice"
        if kind == "str":
            return None if isinstance(value, str) and value.strip() else "empty or not a string"
        if kind == "choice_or_path":
            if not isinstance(value, str):
                return "not a word or path"
            if value.strip().lower() in self.choices:
                return None
            return None if Path(value).expanduser().is_file() else "no such file"
        if kind == "path":
            if not isinstance(value, str):
                return "not a path"
            if value and not Path(value).expanduser().is_file():
                return "no such file"
            return None
        if kind == "int_list":
            if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
                return "not a list of integers"
            if not self.min_len <= len(value) <= self.max_len:
                return "wrong length"
            return next((p for p in map(self._range_problem, value) if p), None)
        if kind == "split_caps":
            if not isinstance(value, Mapping) or not value:
                return "not split:count pairs"
            if any(k not in SPLITS for k in value):
                return "unknown split"
            if not all(_is_int(v) for v in value.values()):
                return "a count is not an integer"
            return next((p for p in map(self._range_problem, value.values()) if p), None)
        if kind == "fractions":
            if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
                    _is_number(v) for v in value):
                return "not three numbers"
            bad = next((p for p in map(self._range_problem, value) if p), None)
            if bad:
                return bad
            return None if abs(sum(value) - 1.0) <= 1e-6 else "the fractions do not sum to 1"
        raise AssertionError(kind)


def parse_structured(valid: Valid, text: str) -> Any:
    """The CLI syntax of structured values: 'train:16,val:6' (split_caps), '0.7,0.1,0.2'
    (fractions), 'none'; any other text is returned unchanged (the check then rejects it)."""
    stripped = text.strip()
    if valid.none_ok and stripped.lower() in {"none", "null"}:
        return None
    if valid.kind == "split_caps" and ":" in stripped:
        out: dict[str, Any] = {}
        for part in stripped.split(","):
            name, _, count = part.partition(":")
            try:
                out[name.strip()] = int(count.strip())
            except ValueError:
                out[name.strip()] = count.strip()
        return out
    if valid.kind == "fractions" and "," in stripped:
        try:
            return tuple(float(p) for p in stripped.split(","))
        except ValueError:
            return stripped
    return text
