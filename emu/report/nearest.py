"""The nearest passing schedule of a finding: one choice fewer, or one choice moved by a
few decision points, that no oracle objects to; and what the explained read does there."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from emu.engine.choice import Choice
from emu.engine.executor import Executor
from emu.engine.run import Read, Run
from emu.errors import ScheduleError
from emu.oracles import judge
from emu.report.explain_parts import Context
from emu.search.replay import Replay
from emu.search.schedule import Schedule

Choices = tuple[tuple[int, Choice], ...]
#: Differing loads shown (the JSON has them all through `explain`'s loads).
MAX_DIFFERENCES = 4
#: How far a choice is moved, nearest first.
MOVES = (1, -1, 2, -2, 3, -3)


@dataclass(frozen=True)
class Nearest:
    """The nearest passing schedule and what changes in the explained read."""

    schedule: str
    change: str
    differences: tuple[str, ...]


def candidates(choices: Choices) -> Iterator[tuple[Choices, str]]:
    """Schedules one edit away from `choices`, nearest first: a choice moved by one
    decision point, a choice removed, a choice moved by 2 or 3 (to a point no other choice
    uses)."""
    points = {p for p, _ in choices}
    for d in MOVES[:2]:
        yield from _moved(choices, points, d)
    for i, (p, c) in enumerate(choices):
        yield choices[:i] + choices[i + 1 :], f"without {p}:{c.label}"
    for d in MOVES[2:]:
        yield from _moved(choices, points, d)


def _moved(choices: Choices, points: set[int], d: int) -> Iterator[tuple[Choices, str]]:
    for i, (p, c) in enumerate(choices):
        q = p + d
        if q < 0 or q in points:
            continue
        moved = tuple(sorted(choices[:i] + ((q, c),) + choices[i + 1 :], key=lambda x: x[0]))
        yield moved, f"{p}:{c.label} moved to {q}"


def _compact(choices: Choices) -> str:
    return " ".join(f"{p}:{c.label}" for p, c in choices) or "(no preemption)"


def nearest_passing(
    schedule: Schedule, executor: Executor, run: Run, read: Read, ctx: Context
) -> Nearest | None:
    """The first candidate schedule that passes every oracle, with what differs."""
    for choices, change in candidates(tuple(schedule.choices)):
        try:
            other = executor.run(Replay(choices))
        except ScheduleError:
            continue
        if judge(other, executor.scenario):
            continue
        return Nearest(_compact(choices), change, tuple(_differences(ctx, other, read)))
    return None


def _differences(ctx: Context, other: Run, read: Read) -> list[str]:
    """The explained read in the passing run: its result and the loads that read another
    store (or another value) than in the finding."""
    twin = next((r for r in other.reads if r.label == read.label), None)
    if twin is None:
        return [f"{read.label} does not run"]
    out = [f"{read.label} {twin.outcome} {twin.value} (t={twin.start}..{twin.end})"]
    octx = Context(ctx.executor, other, ctx.lines)
    mine = [ctx.load(s) for s in ctx.sources if s.read == read.label]
    theirs = [octx.load(s) for s in octx.sources if s.read == read.label]
    valued: list[str] = []
    stored: list[str] = []
    for a, b in zip(mine, theirs, strict=False):
        if a.field != b.field:
            valued.append(f"from t={b.t} it loads {b.field} where the finding loaded {a.field}")
            break
        if (a.value, a.label) != (b.value, b.label):
            line = f"{a.field} (t={b.t}) = {b.value:#x} <- {b.store}, not {a.value:#x} <- {a.store}"
            (valued if a.value != b.value else stored).append(line)
    # Loads whose value changed explain the pass; same value from another store only
    # when nothing else differs.
    shown = valued or stored
    out += shown[:MAX_DIFFERENCES]
    if len(shown) > MAX_DIFFERENCES:
        out.append(f"... and {len(shown) - MAX_DIFFERENCES} more loads")
    if len(mine) != len(theirs):
        out.append(f"{len(theirs)} shared-page loads instead of {len(mine)}")
    return out
