"""How the report groups variants: which [[estimators]] table of the sweep config each variant
comes from, the estimator families (one figure of variance, bias and cosine against N each) and
the one-option sweeps (each metric against the swept value).

Tables are matched to rows through the variant labels the sweep recorded in `_sweep.json` for each
combination of each table's axes (`table_variants`), so a report never resolves options through the
registry of its own day, and results stay readable after an option is renamed or removed. Records
written before pgvar kept those labels fall back to resolving every combination with the current
registry, as the sweep did, and comparing with the rows' `estimator` and `estimator_options` JSON;
either way which table a variant comes from never depends on parsing its label.

The family rule: the tables of one estimator that sweep the same option names form one family;
a table that sweeps nothing joins the first family of its estimator (or forms its own). So
REINFORCE's baseline sweeps, its total-return form and its fixed variants (discount_score=false,
an entropy bonus) are one family, while its critic sweep, GAE's λ sweep and each off-policy
estimator's KL sweep are families of their own. A variant belongs to the family of the first
table that produces it; variants no table produces (results of an older registry) form a family
of their own rather than vanish.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pandas as pd

from envs.spec import ConfigError
from estimators import resolve_estimator

UNMATCHED_FAMILY = "not produced by any [[estimators]] table of the config"
KIND_NUMBER = re.compile(r"^([A-Za-z_]+):(.+)$")  # "kl:0.05", "oracle_noisy:3": a kind and a number


@dataclass(frozen=True)
class EstimatorTable:
    """One [[estimators]] table of the sweep config, as `_sweep.json` records it (resolved values)."""

    index: int  # position among the config's tables
    name: str
    fixed: tuple[tuple[str, Any], ...]
    axes: tuple[tuple[str, tuple[Any, ...]], ...]  # (option, values in config order)
    batch_sizes: tuple[int, ...]  # the N it is configured for: its own, else those of the problems it runs on
    variants: tuple[str, ...] = ()  # the label of each combination, as the sweep recorded it (older records: none)

    @property
    def swept(self) -> tuple[str, ...]:
        return tuple(axis for axis, _ in self.axes)

    @property
    def axis(self) -> str | None:
        """The option this table sweeps when it sweeps exactly one, over ≥ 2 values."""
        return self.axes[0][0] if len(self.axes) == 1 and len(self.axes[0][1]) > 1 else None

    def combinations(self) -> Iterator[dict[str, Any]]:
        """Its variants' options, in config order (the last axis varying fastest)."""
        for values in itertools.product(*(values for _, values in self.axes)):
            yield {**dict(self.fixed), **dict(zip(self.swept, values))}


def parse_tables(raw: Sequence[Mapping[str, Any]], batch_sizes: Sequence[int],
                 variants: Sequence[Sequence[str]] | None = None,
                 problems: Sequence[Mapping[str, Any]] = ()) -> tuple[EstimatorTable, ...]:
    """The `estimators` list of `_sweep.json`, the sweep's batch sizes, where recorded its
    `table_variants`, and its `problems` (whose own `batch_sizes` serve a table without its own, as
    in bench.cells) → tables; KeyError/TypeError/ValueError on a malformed entry."""
    own = {str(p.get("label") or p["env"]): p.get("batch_sizes") or batch_sizes for p in problems}

    def configured(table: Mapping[str, Any]) -> tuple[int, ...]:
        if table.get("batch_sizes"):
            return tuple(int(n) for n in table["batch_sizes"])
        ranges = [own.get(name, batch_sizes) for name in table.get("problems") or own] or [batch_sizes]
        return tuple(dict.fromkeys(int(n) for sizes in ranges for n in sizes))

    tables = tuple(EstimatorTable(i, str(t["name"]), tuple((str(k), v) for k, v in t["options"]),
                                  tuple((str(axis), tuple(values)) for axis, values in t["sweep"]), configured(t))
                   for i, t in enumerate(raw))
    if variants is None:
        return tables
    if len(variants) != len(tables):
        raise ValueError(f"table_variants has {len(variants)} entries for {len(tables)} tables")
    labelled = []
    for table, labels in zip(tables, variants):
        combinations = math.prod(len(values) for _, values in table.axes)
        if len(labels) != combinations or not all(isinstance(label, str) for label in labels):
            raise ValueError(f"table_variants[{table.index}] is not one label per combination of its axes")
        labelled.append(replace(table, variants=tuple(labels)))
    return tuple(labelled)


def options_key(name: str, options: Mapping[str, Any]) -> str:
    """The `estimator_options` JSON a sweep row carries for these options (resolved as the sweep does)."""
    return json.dumps(resolve_estimator(name, options).as_dict(), sort_keys=True)


MEMBERSHIP_COLUMNS = ["variant", "estimator", "estimator_options", "table", "position", "value"]


def memberships(tables: Sequence[EstimatorTable]) -> pd.DataFrame:
    """Every (table, combination): what identifies the variant it produces — the label the sweep
    recorded, or (older records) the estimator and the options JSON it resolves to now (together
    they identify a variant: estimators may share option names) —, its position in the table and,
    for a one-option sweep, the swept value as text. → MEMBERSHIP_COLUMNS"""
    records = []
    for table in tables:
        for position, options in enumerate(table.combinations()):
            variant, key = (table.variants[position], None) if table.variants else (None, _resolved_key(table, options))
            value = value_text(options[table.axis]) if table.axis else ""
            records.append({"variant": variant, "estimator": table.name, "estimator_options": key,
                            "table": table.index, "position": position, "value": value})
    return pd.DataFrame(records, columns=MEMBERSHIP_COLUMNS)


def _resolved_key(table: EstimatorTable, options: Mapping[str, Any]) -> str:
    try:
        return options_key(table.name, options)
    except ConfigError as err:
        raise ConfigError(f"estimators[{table.index}] of the recorded config no longer resolves ({err}); "
                          "rerun the sweep with this pgvar") from None


def value_text(value: Any) -> str:
    """An option value as the config reads: 0.5, 1, true, kl:0.05, 0.9,0.4."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(value_text(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class Family:
    """Variants shown together: one figure of each metric against N."""

    title: str
    tables: tuple[int, ...]
    variants: tuple[str, ...]  # config order: tables, then their combinations


def table_label(table: EstimatorTable, variant: str) -> str:
    """A table's name: one of its variants' labels without the swept options, e.g.
    "gae lambda=0 critic=fitted" → "gae critic=fitted" for a λ sweep."""
    name, *options = variant.split(" ")
    return " ".join([name, *(o for o in options if o.split("=", 1)[0] not in table.swept)])


def variants_by_table(rows: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """[variant, table, position, value] for every (variant in the rows, table producing it),
    sorted by table and position."""
    recorded = len(members) > 0 and members["variant"].notna().all()  # one _sweep.json: all or none
    keys = ["variant"] if recorded else ["estimator", "estimator_options"]
    measured = rows[list(dict.fromkeys(["variant", *keys]))].drop_duplicates()
    return (measured.merge(members[[*keys, "table", "position", "value"]], on=keys)
            .sort_values(["table", "position"], kind="stable")[["variant", "table", "position", "value"]]
            .reset_index(drop=True))


def families(tables: Sequence[EstimatorTable], by_table: pd.DataFrame, variants: Iterable[str]) -> list[Family]:
    """The families of the measured `variants` (the rule is in the module docstring), in config
    order. `by_table`: `variants_by_table`'s frame."""
    first_table = by_table.drop_duplicates("variant").set_index("variant")["table"]
    family_of: dict[int, tuple[str, tuple[str, ...]]] = {}  # table index → family key
    for table in tables:
        key = (table.name, table.swept)
        if not table.swept:
            key = next((k for k in family_of.values() if k[0] == table.name), key)
        family_of[table.index] = key
    grouped: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for index, key in family_of.items():
        grouped.setdefault(key, []).append(index)
    result = []
    for key, indices in grouped.items():
        members = [v for v in dict.fromkeys(by_table.loc[by_table["table"].isin(indices), "variant"])
                   if first_table[v] in indices]
        if not members:
            continue  # every combination skipped (does not apply) or not run yet
        first = next(tables[i] for i in indices if (by_table["table"] == i).any())  # the first with rows
        label = table_label(first, by_table.loc[by_table["table"] == first.index, "variant"].iloc[0])
        result.append(Family(label + (f": {', '.join(first.swept)} sweep" if first.swept else ""), tuple(indices),
                             tuple(members)))
    unmatched = sorted(set(variants) - set(first_table.index))
    if unmatched:
        result.append(Family(UNMATCHED_FAMILY, (), tuple(unmatched)))
    return result


# ------------------------------------------------------------------------------ one-option sweeps

@dataclass(frozen=True)
class Axis:
    """An option swept on its own by one or more tables: the x axis of a sweep figure."""

    option: str
    tables: tuple[int, ...]
    values: tuple[str, ...]  # as text, first-seen order over the tables
    numbers: tuple[float, ...] | None  # the values as numbers, when they all are (or all `kind:number`)
    kind: str  # the common prefix of `kind:number` values ("kl"), else ""

    @property
    def log_scale(self) -> bool:
        """Numbers spanning a factor ≥ 10, all positive: a log x axis."""
        return self.numbers is not None and min(self.numbers) > 0 and max(self.numbers) >= 10 * min(self.numbers)

    def x(self, value: str) -> float:
        """Where a value sits on the x axis: its number, or its position among the values."""
        index = self.values.index(value)
        return self.numbers[index] if self.numbers is not None else float(index)

    @property
    def title(self) -> str:
        return f"{self.option} ({self.kind})" if self.kind else self.option


def _as_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _numbers(values: Sequence[str]) -> tuple[tuple[float, ...] | None, str]:
    """(the values as numbers, their common kind) if every value is a number or every value is
    `kind:number` with one kind; else (None, "")."""
    plain = [_as_number(v) for v in values]
    if all(n is not None for n in plain):
        return tuple(plain), ""
    matches = [KIND_NUMBER.match(v) for v in values]
    if all(matches) and len({m.group(1) for m in matches}) == 1:
        numbers = [_as_number(m.group(2)) for m in matches]
        if all(n is not None for n in numbers):
            return tuple(numbers), matches[0].group(1)
    return None, ""


def sweep_axes(tables: Sequence[EstimatorTable]) -> list[Axis]:
    """One axis per option that some table sweeps on its own, in order of first appearance."""
    options: dict[str, list[EstimatorTable]] = {}
    for table in tables:
        if table.axis:
            options.setdefault(table.axis, []).append(table)
    axes = []
    for option, owners in options.items():
        values = tuple(dict.fromkeys(value_text(v) for t in owners for v in t.axes[0][1]))
        numbers, kind = _numbers(values)
        axes.append(Axis(option, tuple(t.index for t in owners), values, numbers, kind))
    return axes


def table_labels(tables: Sequence[EstimatorTable], by_table: pd.DataFrame) -> dict[int, str]:
    """Each table that produced rows → its label (`table_label` of its first variant)."""
    firsts = by_table.drop_duplicates("table").set_index("table")["variant"]
    return {t.index: table_label(t, firsts[t.index]) for t in tables if t.index in firsts.index}


def axis_points(points: pd.DataFrame, by_table: pd.DataFrame, axis: Axis, labels: Mapping[int, str]) -> pd.DataFrame:
    """The points of the tables sweeping `axis`, one row per (table, value, problem, N), with
    `series` (the table's label), `value` (as text) and `x` (where the value sits on the axis). A variant that
    several of these tables produce (e.g. a table repeated for more repetitions on some problems) has the same points
    whichever table names it: it is shown once, under the first."""
    on_axis = by_table[by_table["table"].isin(axis.tables)].drop_duplicates("variant")
    frame = on_axis.merge(points, on="variant")
    return frame.assign(axis=axis.option, series=frame["table"].map(labels),
                        x=[axis.x(value) for value in frame["value"]])
