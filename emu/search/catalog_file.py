"""The catalog file: reading it and turning its JSON into checked entries.

Every mistake in the file is a CatalogError (a usage error) that names the entry and says
what is expected there; the entries are `emu.search.entry.Entry` records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import vdso_blobs
from emu.engine.scenario import ORACLES, Scenario
from emu.errors import ImageError, ScheduleError, UsageError, check_range
from emu.search.entry import PASS, VIOLATION, Entry, Witness

CATALOG = vdso_blobs.path(vdso_blobs.CATALOG)  # package data: works from a wheel too
FORMAT = "vdsofuzz-catalog/1"


class CatalogError(UsageError):
    """The catalog file is missing or malformed."""


#: The keys of a catalog entry: the scenario's, then the expectation's.
_SCENARIO_KEYS = (
    "image",
    "host",
    "params",
    "vcpus",
    "reads",
    "task_migration",
    "speculative_tsc",
    "writer",
)
_EXPECT_KEYS = ("name", "oracles", "accuracy_ns", "expect", "oracle", "strategy", "seed", "why")
_ENTRY_KEYS = {*_SCENARIO_KEYS, *_EXPECT_KEYS, "max_schedules", "reference", "witness"}


def oracle_list(value: Any, where: str) -> tuple[str, ...]:
    """`"consistent"` or `["accurate", "monotonic"]` -> a tuple of known oracle names."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or any(n not in ORACLES for n in names):
        raise CatalogError(f"{where}: oracle must name one or a list of {', '.join(ORACLES)}")
    return tuple(names)


def _witnesses(value: Any, where: str) -> tuple[Witness, ...]:
    from emu.errors import ImageError
    from emu.image.loader import resolve

    if not isinstance(value, list) or not value:
        raise CatalogError(f"{where}: witness must be a list of reader names")
    out = []
    for w in value:
        if isinstance(w, str):
            w = {"image": w}
        if not isinstance(w, dict) or set(w) - {"image", "oracle"} or "image" not in w:
            raise CatalogError(f"{where}: a witness is a name or {{'image': ..., 'oracle': ...}}")
        try:
            resolve(str(w["image"]))
        except ImageError:
            raise CatalogError(f"{where}: witness {w['image']!r} is not a known image") from None
        oracles = oracle_list(w["oracle"], where) if "oracle" in w else ()
        out.append(Witness(str(w["image"]), oracles))
    return tuple(out)


def parse(data: Any, *, source: str = "catalog") -> list[Entry]:
    """Catalog JSON -> entries; every mistake is a CatalogError naming the entry."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CatalogError(f"{source}: not a vdsofuzz catalog (expected format {FORMAT!r})")
    defaults = data.get("defaults", {})
    entries: list[Entry] = []
    seen: set[str] = set()
    for i, raw in enumerate(data.get("scenarios", [])):
        if not isinstance(raw, dict):
            raise CatalogError(f"{source}: scenario #{i} is not an object")
        row = {**defaults, **raw}
        name = str(row.get("name", f"#{i}"))
        where = f"{source}: {name}"
        bad = sorted(set(row) - _ENTRY_KEYS)
        if bad:
            raise CatalogError(f"{where}: unknown key {bad[0]!r}")
        if name in seen:
            raise CatalogError(f"{source}: two scenarios are called {name!r}")
        seen.add(name)
        entries.append(_entry(row, name, where))
    if not entries:
        raise CatalogError(f"{source}: no scenarios")
    return entries


def _entry(row: dict[str, Any], name: str, where: str) -> Entry:
    """One scenario row (defaults applied) -> its entry. The checks run in a fixed order
    (expectation, oracle, image, witnesses, strategies, scenario): the first mistake is
    the one reported."""
    expect = row.get("expect")
    if expect not in (PASS, VIOLATION):
        raise CatalogError(f"{where}: expect must be 'pass' or 'violation'")
    oracles: tuple[str, ...] = ()
    if row.get("oracle") is not None:
        if expect != VIOLATION:
            raise CatalogError(f"{where}: an oracle is only for an expected violation")
        oracles = oracle_list(row["oracle"], where)
    if "image" not in row:
        raise CatalogError(f"{where}: no image")
    witnesses = _expected_witnesses(row, expect, where)
    strategies = _strategies(row, where)
    scenario = _scenario(row, where)
    return Entry(
        name=name,
        scenario=scenario,
        expect=expect,
        oracles=oracles,
        strategies=strategies,
        seed=int(row.get("seed", 0)),
        max_schedules=int(row.get("max_schedules", 2000)),
        reference=bool(row.get("reference", False)),
        why=str(row.get("why", "")),
        witnesses=witnesses,
    )


def _expected_witnesses(row: dict[str, Any], expect: str, where: str) -> tuple[Witness, ...]:
    """The witnesses of an expected pass (required there, refused anywhere else)."""
    if expect == PASS:
        if "witness" not in row:
            raise CatalogError(
                f"{where}: an expected pass names a witness, a seeded-bug reader the same "
                'scenario must catch (e.g. "witness": ["bug-no-retry"])'
            )
        return _witnesses(row["witness"], where)
    if "witness" in row:
        raise CatalogError(f"{where}: a witness is only for an expected pass")
    return ()


def _strategies(row: dict[str, Any], where: str) -> tuple[str, ...]:
    """`"random"` or `["pct", "random"]` -> a tuple of known strategy names."""
    from emu.search.fuzz import STRATEGIES  # the search driver loads the engine: only now

    strategies = row.get("strategy", "hypothesis")
    strategies = (strategies,) if isinstance(strategies, str) else tuple(strategies)
    if not strategies or any(s not in STRATEGIES for s in strategies):
        raise CatalogError(f"{where}: strategy must be one or a list of {', '.join(STRATEGIES)}")
    return strategies


def _scenario(row: dict[str, Any], where: str) -> Scenario:
    """The row's scenario, its values checked as the command line checks them."""
    try:
        check_range("max_schedules", row.get("max_schedules", 2000), 1, None)
        return Scenario(
            image=str(row["image"]),
            host=str(row.get("host", "kvm")),
            host_params=dict(row.get("params", {})),
            vcpus=int(row.get("vcpus", 2)),
            reads=int(row.get("reads", 2)),
            oracles=tuple(row.get("oracles", ORACLES)),
            accuracy_ns=int(row.get("accuracy_ns", 1_000_000)),
            task_migration=bool(row.get("task_migration", False)),
            speculative_tsc=bool(row.get("speculative_tsc", False)),
            writer=_writer(row, where),
        )
    except (ScheduleError, TypeError, ValueError) as e:
        raise CatalogError(f"{where}: {e}") from None


def _writer(row: dict[str, Any], where: str) -> str:
    """The row's compiled host writer (bundled name or path), checked it loads."""
    spec = row.get("writer", "")
    if not spec:
        return ""
    from emu.image.writer import load_writer

    try:
        load_writer(str(spec))
    except ImageError as e:
        raise CatalogError(f"{where}: {e}") from None
    return str(spec)


def read(path: Path | None = None) -> dict[str, Any]:
    """The catalog file as JSON (the shipped one by default)."""
    path = path or CATALOG
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise CatalogError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise CatalogError(f"{path}: not JSON ({e})") from None


def load(path: Path | None = None) -> list[Entry]:
    """The catalog file's entries (the shipped catalog by default)."""
    return parse(read(path), source=str(path or CATALOG))
