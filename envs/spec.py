"""Option specifications and name registries shared by problems and estimators.

Every user-facing name (a problem, an estimator, an option) is resolved here, so that
every mistake produces the same kind of message: one line that names what was wrong and
lists or describes what is allowed. `ConfigError` is the only exception meant for users;
the CLI prints its message and exits non-zero without a traceback.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Generic, Mapping, TypeVar


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
class When:
    """An `only_if` condition: option `name` of the same config has one of `values`. An option that has it
    may leave its default only where the condition holds (`critic_samples` only when `critic=fitted`)."""

    name: str
    values: tuple[Any, ...]

    def __init__(self, name: str, *values: Any):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "values", values)

    def holds(self, config: Any) -> bool:
        value = getattr(config, self.name)
        return value in self.values or (isinstance(value, str) and value.partition(":")[0] in self.values)

    def __str__(self) -> str:
        return " or ".join(f"{self.name}={v if not isinstance(v, bool) else str(v).lower()}" for v in self.values)


@dataclass(frozen=True)
class Option:
    """One named option: its parser, default (already parsed), a one-line description and where it applies."""

    parser: Parser
    default: Any
    doc: str
    grid: tuple[Any, ...] | None = None  # the examples, when the default rule below does not fit
    only_if: When | None = None

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


def option(parser: Parser, default: Any, doc: str, *, grid: tuple[Any, ...] | None = None,
           only_if: When | None = None, key: str | None = None) -> Any:
    """A field of a `Config`: `name: type = option(Float(0.0), 0.5, "what it is")`. `key` is the option's name for
    users (CLI, TOML, stored records) when it cannot be the field's (GAE's `lambda` is a Python keyword: field `lam`)."""
    return dataclasses.field(default=default, metadata={"option": Option(parser, default, doc, grid, only_if),
                                                        "key": key})


def reuse(spec: Option, **changes: Any) -> Any:
    """A field declared by an `Option` shared between configs (the critic's options), optionally changed."""
    spec = dataclasses.replace(spec, **changes)
    return dataclasses.field(default=spec.default, metadata={"option": spec, "key": None})


def _key(field: dataclasses.Field) -> str:
    return field.metadata.get("key") or field.name


C = TypeVar("C", bound="Config")


@dataclass(frozen=True)
class Config:
    """A frozen, typed set of options whose fields are declared by `option(...)`: the one place an option's
    parser (allowed values), default, doc and `only_if` live. Every way in (`parse` from CLI strings or TOML
    values, or the constructor from Python values) runs each field through its parser and checks the `only_if`
    conditions, so a config that exists is valid, with full-precision values."""

    kind: ClassVar[str] = "config"  # "env" or "estimator", in messages
    name: ClassVar[str] = ""  # the registered name, set by `Registry.register`

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            spec, raw = field.metadata["option"], getattr(self, field.name)
            try:
                object.__setattr__(self, field.name, spec.parser(raw))
            except ValueError as err:
                raise ConfigError(f"option {_key(field)}={raw!r} for {self.owner()}: expected {err}") from None
        for field in dataclasses.fields(self):
            spec = field.metadata["option"]
            if spec.only_if is not None and getattr(self, field.name) != spec.default and not spec.only_if.holds(self):
                raise ConfigError(f"{self.owner()}: option {_key(field)} applies only to {spec.only_if}")
        self.validate()

    def validate(self) -> None:
        """Checks across fields beyond `only_if` (ConfigError); by default none."""

    @classmethod
    def owner(cls) -> str:
        return f"{cls.kind} {cls.name}"

    @classmethod
    def options(cls) -> dict[str, Option]:
        """option name → Option, in declaration order."""
        return {_key(field): field.metadata["option"] for field in dataclasses.fields(cls)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {key: spec.default for key, spec in cls.options().items()}

    @classmethod
    def parse(cls: type[C], given: Mapping[str, Any] | None = None) -> C:
        """The config of `given` (CLI strings or typed values) over the defaults; an unknown key is a
        ConfigError listing the valid ones."""
        fields = {_key(field): field.name for field in dataclasses.fields(cls)}
        given = dict(given or {})
        unknown = [key for key in given if key not in fields]
        if unknown:
            valid = ", ".join(fields) or "(none)"
            raise ConfigError(f"unknown option '{unknown[0]}' for {cls.owner()}; valid options: {valid}")
        return cls(**{fields[key]: value for key, value in given.items()})

    def as_dict(self) -> dict[str, Any]:
        """option name → value, every option (the record stored with a result)."""
        return {_key(field): getattr(self, field.name) for field in dataclasses.fields(self)}

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)


def resolve_options(
    owner: str, specs: Mapping[str, Option], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Defaults overlaid with `given`, every value parsed; `owner` names the thing in errors (the settings
    tables of the sweep, which are not registered configs)."""
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
SEED = Int(0, MAX_SEED)


def check_int(value: Any, name: str, parser: Int, why: str = "") -> int:
    """`value` as an integer `parser` accepts, from a Python caller: a bool, float or string is refused (a typo, not
    a count), anything else a ConfigError naming `name`, the allowed range and `why`."""
    try:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(parser.allowed)
        return parser(value)
    except ValueError as err:
        raise ConfigError(f"{name}={value!r}: expected {err}" + (f" ({why})" if why else "")) from None


def check_seed(value: Any, name: str) -> int:
    """`value` as a seed: an integer in [0, MAX_SEED] (numpy's SeedSequence takes no negative entropy), or a
    ConfigError naming `name`; None (fresh OS entropy) is refused, since a measurement must be reproducible."""
    return check_int(value, name, SEED, "a fixed seed makes the run reproducible")


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

    def entry(self, name: str) -> Callable[[type], type]:
        """Class decorator: `@ESTIMATORS.entry("reinforce")` makes a Config subclass a frozen dataclass (its
        annotated `option(...)` fields are its options), sets its `name` and registers it."""
        def register(cls: type) -> type:
            if "__dataclass_params__" not in cls.__dict__:
                cls = dataclasses.dataclass(frozen=True)(cls)
            cls.name = name
            return self.register(name, cls)
        return register

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}'; valid: {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())


__all__ = [
    "MAX_SEED", "Bool", "Choice", "Config", "ConfigError", "Float", "FloatList", "Int", "IntList", "Option", "Parser",
    "Registry", "When", "check_int", "check_seed", "option", "parse_key_values", "resolve_options", "reuse",
]
