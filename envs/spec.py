"""Option specifications and name registries shared by problems and estimators.

Every user-facing name (a problem, an estimator, an option) is resolved here, so that
every mistake produces the same kind of message: one line that names what was wrong and
lists or describes what is allowed. `ConfigError` is the only exception meant for users;
the CLI prints its message and exits non-zero without a traceback.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Generic, Mapping, TypeVar


class ConfigError(ValueError):
    """Bad user input. The message is one line, written for the person who typed it."""


class Parser:
    """Turns a raw option value (a CLI string or a typed TOML/Python value) into a checked value."""

    allowed: str = ""

    def __call__(self, raw: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Float(Parser):
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False

    @property
    def allowed(self) -> str:
        if math.isinf(self.low) and math.isinf(self.high):
            return "a finite number"
        left = "(" if self.low_open or math.isinf(self.low) else "["
        right = ")" if math.isinf(self.high) else "]"
        return f"a number in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"

    def __call__(self, raw: Any) -> float:
        try:
            value = float(raw) if not isinstance(raw, bool) else math.nan
        except (TypeError, ValueError):
            value = math.nan
        ok = math.isfinite(value) and value <= self.high
        ok = ok and (value > self.low if self.low_open else value >= self.low)
        if not ok:
            raise ValueError(self.allowed)
        return value


@dataclass(frozen=True)
class Int(Parser):
    low: int = 0
    high: int | None = None

    @property
    def allowed(self) -> str:
        return f"an integer ≥ {self.low}" + (f" and ≤ {self.high}" if self.high is not None else "")

    def __call__(self, raw: Any) -> int:
        try:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value = int(raw)
        except (TypeError, ValueError):
            raise ValueError(self.allowed) from None
        if value < self.low or (self.high is not None and value > self.high):
            raise ValueError(self.allowed)
        return value


@dataclass(frozen=True)
class Bool(Parser):
    allowed: str = "true or false"

    def __call__(self, raw: Any) -> bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise ValueError(self.allowed)


@dataclass(frozen=True)
class Choice(Parser):
    choices: tuple[str, ...]

    @property
    def allowed(self) -> str:
        return "one of " + ", ".join(self.choices)

    def __call__(self, raw: Any) -> str:
        if str(raw) not in self.choices:
            raise ValueError(self.allowed)
        return str(raw)


@dataclass(frozen=True)
class FloatList(Parser):
    """Comma-separated numbers in [low, high], e.g. `0.9,0.4,0.1`."""

    low: float = -math.inf
    high: float = math.inf
    min_len: int = 1

    @property
    def allowed(self) -> str:
        return f"at least {self.min_len} comma-separated numbers in [{_fmt(self.low)}, {_fmt(self.high)}]"

    def __call__(self, raw: Any) -> tuple[float, ...]:
        return _parse_list(raw, Float(self.low, self.high), self.min_len, self.allowed)


@dataclass(frozen=True)
class IntList(Parser):
    """Comma-separated integers ≥ low, e.g. `64,64` (layer widths)."""

    low: int = 1
    min_len: int = 1

    @property
    def allowed(self) -> str:
        return f"at least {self.min_len} comma-separated integers ≥ {self.low}"

    def __call__(self, raw: Any) -> tuple[int, ...]:
        return _parse_list(raw, Int(self.low), self.min_len, self.allowed)


def _parse_list(raw: Any, item: Parser, min_len: int, allowed: str) -> tuple[Any, ...]:
    """A comma-separated string or a sequence, each entry parsed by `item` → tuple, or ValueError(allowed)."""
    items = raw.split(",") if isinstance(raw, str) else raw
    try:
        values = tuple(item(entry) for entry in items)
    except (TypeError, ValueError):
        raise ValueError(allowed) from None
    if len(values) < min_len:
        raise ValueError(allowed)
    return values


def number_text(x: float, digits: int = 6) -> str:
    """The text of an option value that reads back as exactly x: `.{digits}g` where that is exact (so the
    labels and cell ids of such values stay as they always were: 6 digits for most options, 15 for the
    behaviour policy's), else the fewest of 15–17 digits that are. A `kind:<number>` option is parsed into
    this text and parsed again where it is used, so rounding here would silently change the value run
    (0.479401936 ran as 0.479402)."""
    for digits in (digits, 15, 16, 17):
        text = f"{x:.{digits}g}"
        if float(text) == x:
            return text
    raise AssertionError("17 significant digits always round-trip a float64")


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:g}"


@dataclass(frozen=True)
class Option:
    """One named option: its parser, default (already parsed) and a one-line description."""

    parser: Parser
    default: Any
    doc: str
    grid: tuple[Any, ...] | None = None  # the examples, when the default rule below does not fit

    @property
    def examples(self) -> tuple[Any, ...]:
        """Values that exercise the option: `grid` if given, every choice of a finite option, else
        the default. Tests take the product of these over an estimator's options, so new entries are covered."""
        if self.grid is not None:
            return self.grid
        if isinstance(self.parser, Choice):
            return self.parser.choices
        if isinstance(self.parser, Bool):
            return (True, False)
        return getattr(self.parser, "examples", (self.default,))


def resolve_options(
    owner: str, specs: Mapping[str, Option], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Defaults overlaid with `given`, every value parsed; `owner` names the thing in errors."""
    resolved = {name: spec.default for name, spec in specs.items()}
    for key, raw in (given or {}).items():
        if key not in specs:
            valid = ", ".join(specs) or "(none)"
            raise ConfigError(f"unknown option '{key}' for {owner}; valid options: {valid}")
        try:
            resolved[key] = specs[key].parser(raw)
        except ValueError as err:
            raise ConfigError(f"option {key}={raw!r} for {owner}: expected {err}") from None
    return resolved


MAX_SEED = 2**63 - 1  # the largest int64: seeds are stored in int64 columns


def check_seed(value: Any, name: str) -> int:
    """`value` as a seed: an integer in [0, MAX_SEED] (numpy's SeedSequence takes no negative entropy), or a
    ConfigError naming `name`; None (fresh OS entropy) is refused, since a measurement must be reproducible."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name}={value!r}: expected an integer in [0, 2^63 − 1] (a fixed seed makes the run "
                          "reproducible)")
    return int(value)


def parse_key_values(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """`["a=1", "b=x"]` → `{"a": "1", "b": "x"}`; a pair without '=' is a ConfigError."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


T = TypeVar("T")


class Registry(Generic[T]):
    """Names → entries. Unknown names fail with the list of valid ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}'; valid: {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())


__all__ = [
    "MAX_SEED", "Bool", "Choice", "ConfigError", "Float", "FloatList", "Int", "IntList", "Option", "Parser",
    "Registry", "check_seed", "parse_key_values", "resolve_options",
]
