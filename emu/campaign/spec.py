"""A campaign spec (TOML) -> the checked product of its scenario axes, strategies and seeds.

Every mistake is a SpecError (a usage error: one line, exit 2) naming the spec's line, found
before any work starts. Without a spec the campaign is the catalog's scenarios.

    strategies = ["random", "pct"]   # default: random, pct, hypothesis; or "dpor"
    seeds = 2                        # or a list: [0, 7]
    depth = 3                        # PCT's bug depth
    chunk = 400                      # schedules per shard checkpoint
    dpor_depth = 2                   # dpor: split points (subtrees = shards)
    preemptions = 2                  # dpor: a preemption bound (default: none)

    [[scenario]]                     # each table is a product of its axes (value or list)
    images = ["modern", "my/vdso64.so", "builds/*.so"]   # bundled name, path, glob, dump dir
    hosts = ["kvm", "kvm-legacy-copy"]
    vcpus = [2, 3]
    reads = 2
    cpu = "lfence"                   # clock, timekeeping, task_migration, speculative_tsc,
    params = { updates = [1, 2] }    # accuracy_ns likewise; params: each a value or a grid
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.engine.scenario import Scenario, clock_name
from emu.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]

#: Strategies a campaign can cut into shards (exhaustive enumerates one bounded space: run
#: it with `vdsofuzz fuzz --strategy exhaustive`; dpor's shards are its subtrees).
STRATEGIES = ("random", "pct", "hypothesis", "dpor")
#: A spec without `strategies` runs these.
DEFAULT_STRATEGIES = ("random", "pct", "hypothesis")
#: Schedules per checkpoint of a catalog campaign.
CATALOG_CHUNK = 100
_TOP = {"strategies", "seeds", "depth", "chunk", "scenario", "dpor_depth", "preemptions"}
#: Scenario axis in the spec -> Scenario field.
_AXES = {
    "images": "image",
    "hosts": "host",
    "vcpus": "vcpus",
    "reads": "reads",
    "cpu": "cpu",
    "clock": "clock",
    "timekeeping": "timekeeping",
    "task_migration": "task_migration",
    "speculative_tsc": "speculative_tsc",
    "accuracy_ns": "accuracy_ns",
    "writers": "writer",
    "max_insns": "max_insns",
}


class SpecError(UsageError):
    """The spec cannot be run; the message names its line."""


@dataclass(frozen=True)
class Spec:
    scenarios: tuple[Scenario, ...]
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    seeds: tuple[int, ...] = (0,)
    depth: int = 3
    #: Schedules a shard runs between two checkpoints.
    chunk: int = 400
    #: Where it came from ("catalog" or the spec path) and a hash of its text.
    source: str = "catalog"
    digest: str = ""
    #: Catalog scenarios: index -> expected verdict label ("pass", "violation (consistent)").
    expected: dict[int, str] = field(default_factory=dict)
    #: dpor: decision points split into subtrees, and the preemption bound (None: none).
    dpor_depth: int = 2
    preemptions: int | None = None


class _Lines:
    """Finds the line of a key in the spec text (tomllib reports no positions for values)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def of(self, key: str, table: int | None = None) -> int:
        """Line (1-based) of `key = ...`, inside the `table`-th [[scenario]] if given."""
        seen, inside = -1, table is None
        pat = re.compile(rf"\s*{re.escape(key)}\s*=")
        for n, line in enumerate(self.lines, 1):
            if re.match(r"\s*\[\[\s*scenario\s*\]\]", line):
                seen += 1
                inside = seen == table
                if inside and key == "[[scenario]]":
                    return n
            elif re.match(r"\s*\[", line) and table is None:
                inside = False
            if inside and pat.match(line):
                return n
            if inside and key in line and re.search(rf"\b{re.escape(key)}\s*=", line):
                return n
        return 1


def parse_duration(text: str) -> float:
    """`30m`, `90s`, `2h`, `45` (seconds) -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if m is None or float(m.group(1)) <= 0:
        raise UsageError(f"--time takes a duration like 90s, 30m or 2h, not {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def load(path: Path | None) -> Spec:
    """The spec at `path`, or the catalog's scenarios when None."""
    if path is None:
        return _catalog()
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec ({e.strerror})") from None
    return parse(text, path)


def parse(text: str, path: Path) -> Spec:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"at line (\d+)", str(e))
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise SpecError(f"{where}: not TOML: {e}; fix the syntax there") from None
    lines = _Lines(text)

    def err(line: int, what: str) -> SpecError:
        return SpecError(f"{path}:{line}: {what}")

    for key in doc:
        if key not in _TOP:
            raise err(lines.of(key), f"unknown key {key!r}; use one of {', '.join(sorted(_TOP))}")
    strategies = _strategies(doc.get("strategies", list(DEFAULT_STRATEGIES)), lines, err)
    seeds = _seeds(doc.get("seeds", 1), lines, err)
    depth, chunk = doc.get("depth", 3), doc.get("chunk", 400)
    dpor_depth, bound = doc.get("dpor_depth", 2), doc.get("preemptions", 0)
    checks = (("depth", depth, 1), ("chunk", chunk, 10), ("dpor_depth", dpor_depth, 0))
    for key, value, low in (*checks, ("preemptions", bound, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise err(lines.of(key), f"{key} must be an integer >= {low}, not {value!r}")
    tables = doc.get("scenario")
    if not isinstance(tables, list) or not tables:
        raise err(1, "no [[scenario]] table: add one with images and hosts")
    scenarios: list[Scenario] = []
    for i, table in enumerate(tables):
        scenarios += _product(table, i, path, lines, err)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    preemptions = doc.get("preemptions")
    return Spec(
        tuple(scenarios),
        strategies,
        seeds,
        depth,
        chunk,
        str(path),
        digest,
        {},
        dpor_depth,
        preemptions,
    )


def _strategies(value: Any, lines: _Lines, err: Any) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        raise err(lines.of("strategies"), "strategies must be a non-empty list")
    for n in names:
        if n not in STRATEGIES:
            raise err(
                lines.of("strategies"),
                f"unknown strategy {n!r}; a campaign runs {', '.join(STRATEGIES)}",
            )
    return tuple(dict.fromkeys(names))


def _seeds(value: Any, lines: _Lines, err: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return tuple(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) for s in value):
        return tuple(dict.fromkeys(value))
    raise err(
        lines.of("seeds"), f"seeds is a count (1 or more) or a list of integers, not {value!r}"
    )


def _axis(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _product(table: Any, i: int, path: Path, lines: _Lines, err: Any) -> list[Scenario]:
    """The scenarios of the i-th [[scenario]] table."""
    head = lines.of("[[scenario]]", i)
    if not isinstance(table, dict):
        raise err(head, "[[scenario]] must be a table")
    for key in table:
        if key not in _AXES and key != "params":
            known = ", ".join([*_AXES, "params"])
            raise err(lines.of(key, i), f"unknown scenario key {key!r}; use one of {known}")
    if "images" not in table or "hosts" not in table:
        raise err(head, "a [[scenario]] needs images and hosts")
    axes: dict[str, list[Any]] = {}
    for key, name in _AXES.items():
        if key in table:
            axes[name] = _axis(table[key])
            if not axes[name]:
                raise err(lines.of(key, i), f"{key} is empty: the product has no scenario")
    axes["image"] = _images(axes["image"], path, lines.of("images", i), err)
    if "writer" in axes:
        axes["writer"] = _writers(axes["writer"], path, lines.of("writers", i), err)
    params = table.get("params", {})
    if not isinstance(params, dict):
        raise err(lines.of("params", i), "params is a table: { name = value or [values] }")
    grid = [
        dict(zip(params, combo, strict=True))
        for combo in itertools.product(*map(_axis, params.values()))
    ]
    if not grid:
        raise err(lines.of("params", i), "a params grid is empty")
    out: list[Scenario] = []
    names = list(axes)
    for combo in itertools.product(*(axes[n] for n in names)):
        for p in grid:
            kw = dict(zip(names, combo, strict=True))
            try:
                out.append(Scenario(host_params=p, **kw))
            except (UsageError, ValueError, TypeError) as e:
                key = "params" if p and "param" in str(e) else _key_for(str(e))
                raise err(lines.of(key, i), f"{e}") from None
    for sc in out:
        _fits_image(sc, i, lines, err)
    return out


def _fits_image(sc: Scenario, i: int, lines: _Lines, err: Any) -> None:
    """What only the image can tell: it loads (for this --cpu), and the real-vDSO options
    apply to it. Each (image, cpu) is loaded once."""
    from emu.errors import ImageError
    from emu.image.cpu import CPU_CHOICES

    if sc.cpu and sc.cpu not in CPU_CHOICES:
        raise err(
            lines.of("cpu", i), f"unknown cpu {sc.cpu!r}; choose from {', '.join(CPU_CHOICES)}"
        )
    try:
        img = _load(sc.image, sc.cpu)
    except ImageError as e:
        raise err(lines.of("images", i), str(e)) from None
    if sc.timekeeping and img.vdso_data is None:
        raise err(
            lines.of("timekeeping", i),
            f"timekeeping needs a real vDSO (with vdso_data); {img.name} is a project reader",
        )
    if clock_name(sc.clock) != "CLOCK_MONOTONIC" and img.call_abi != "clock_gettime":
        raise err(
            lines.of("clock", i),
            f"clock applies to a real vDSO's __vdso_clock_gettime; {img.name} takes no clock id",
        )


_LOADED: dict[tuple[str, str], Any] = {}


def _load(image: str, cpu: str) -> Any:
    from emu.image.loader import load

    key = (image, cpu)
    if key not in _LOADED:
        _LOADED[key] = load(image, cpu=cpu or None)
    return _LOADED[key]


def _key_for(message: str) -> str:
    for key, name in _AXES.items():
        # Scenario names an option the CLI way (`--max-insns`), or by its field.
        if name in message or key in message or f"--{name.replace('_', '-')}" in message:
            return key
    return "hosts"


def _writers(items: list[Any], path: Path, line: int, err: Any) -> list[str]:
    """Compiled host writers: bundled names or paths (relative to the spec's folder, made
    absolute), each checked now; "" is the host model's own store protocol."""
    from emu.errors import ImageError
    from emu.image.writer import load_writer

    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise err(line, f"a writer is a bundled name or a path, not {item!r}")
        local = path.parent / item
        spec = str(local.resolve()) if item and local.is_file() else item
        if spec:
            try:
                load_writer(spec)
            except ImageError as e:
                raise err(line, str(e)) from None
        out.append(spec)
    return out


def _images(items: list[Any], path: Path, line: int, err: Any) -> list[str]:
    """Bundled names, paths, globs (relative to the spec's folder) and dump dirs -> specs."""
    from emu.errors import ImageError
    from emu.image.loader import resolve

    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise err(line, f"an image is a name or a path, not {item!r}")
        base = path.parent
        if any(c in item for c in "*?["):
            found = sorted(glob.glob(str(base / item))) or sorted(glob.glob(item))
            if not found:
                raise err(line, f"no file matches the image glob {item!r}")
            out += [str(Path(f).resolve()) for f in found]
            continue
        # Paths are made absolute: findings name them, and are replayed from anywhere.
        local = base / item
        if local.exists():
            out.append(str(local.resolve()))
            continue
        try:
            _, _, entry = resolve(item)
        except ImageError:
            raise err(
                line, f"unknown image {item!r}: a bundled name (`vdsofuzz images`) or a path"
            ) from None
        out.append(item if entry else str(Path(item).resolve()))
    return out


def _catalog() -> Spec:
    from emu.search.catalog import load as load_catalog

    entries = load_catalog()
    scenarios = tuple(e.scenario for e in entries)
    expected = {i: e.expected for i, e in enumerate(entries)}
    digest = hashlib.sha256(repr(scenarios).encode()).hexdigest()[:16]
    # Small chunks: a short campaign over the catalog's 39 scenarios x 3 strategies reaches
    # every shard early (at 400 a 60 s campaign never got to the Hypothesis shards).
    return Spec(scenarios, chunk=CATALOG_CHUNK, source="catalog", digest=digest, expected=expected)
