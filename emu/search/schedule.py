"""The replayable record: scenario, image hash, seed and the scheduler's non-default choices.

A finding is a schedule plus the violation it produced. Both are small JSON files; replaying
one on the same image reproduces the run bit for bit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.engine.choice import (
    Choice,
    Choices,
    Migrate,
    RunHost,
    RunTask,
    SpeculativeTsc,
    Stay,
)
from emu.engine.scenario import Scenario
from emu.errors import ScheduleError
from host_model.plugins import check_record, file_record

FORMAT = "vdsofuzz-schedule/1"
#: A choice's label (`Choice.label`): t0, host, stay, t0>v1, tsc, tsc-3.
_LABEL = re.compile(r"t(\d+)(?:>v(\d+))?|host|stay|tsc(?:-(\d+))?")


def parse_choice(label: str) -> Choice:
    """The choice a schedule file's `label` names; the inverse of `Choice.label`."""
    m = _LABEL.fullmatch(label)
    if m is None:
        raise ScheduleError(f"unknown choice {label!r} in schedule (t0, host, t0>v1, tsc-2 ...)")
    task, vcpu, back = m.groups()
    if task is not None:
        return RunTask(int(task)) if vcpu is None else Migrate(int(task), int(vcpu))
    if label == "host":
        return RunHost()
    if label == "stay":
        return Stay()
    return SpeculativeTsc(int(back or 0))


@dataclass(frozen=True)
class Schedule:
    scenario: Scenario
    image_sha256: str
    choices: Choices = ()
    seed: int = 0
    strategy: str = "replay"

    def compact(self) -> str:
        """`12:host 30:t1` — the choices as one line, as Shuttle prints a schedule."""
        return " ".join(f"{p}:{c.label}" for p, c in self.choices) or "(no preemption)"

    def to_json(self) -> dict[str, Any]:
        d = {
            "format": FORMAT,
            "scenario": self.scenario.to_json(),
            "image_sha256": self.image_sha256,
            "seed": self.seed,
            "strategy": self.strategy,
            "choices": [[p, c.label] for p, c in self.choices],
        }
        # A host from a file: its path, class and sha256, so a replay can say it is gone
        # or changed (bundled hosts are part of the package version).
        host_file = file_record(self.scenario.host)
        if host_file is not None:
            d["host_file"] = host_file
        if self.scenario.writer:
            # A compiled writer is code like the image: a replay must run the same bytes.
            from emu.image.writer import load_writer

            d["writer_sha256"] = load_writer(self.scenario.writer).sha256
        return d

    @classmethod
    def from_json(cls, d: Any) -> Schedule:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ScheduleError(f"not a vdsofuzz schedule (expected format {FORMAT!r})")
        try:
            choices = tuple((int(p), parse_choice(str(label))) for p, label in d["choices"])
            return cls(
                scenario=Scenario.from_json(d["scenario"]),
                image_sha256=str(d["image_sha256"]),
                choices=choices,
                seed=int(d.get("seed", 0)),
                strategy=str(d.get("strategy", "replay")),
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ScheduleError):
                raise
            raise ScheduleError(f"malformed schedule: {type(e).__name__} {e}") from None


@dataclass(frozen=True)
class Finding:
    """A violating schedule, the oracle it breaks and the message that explains it."""

    schedule: Schedule
    oracle: str
    message: str
    reads: tuple[str, ...] = ()
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = self.schedule.to_json()
        d["violation"] = {"oracle": self.oracle, "message": self.message, "reads": list(self.reads)}
        d["stats"] = self.stats
        return d

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        return path


def load_file(path: Path) -> tuple[Schedule, dict[str, Any] | None]:
    """A schedule or finding file -> (schedule, the recorded violation or None)."""
    try:
        d = json.loads(Path(path).read_text())
    except OSError as e:
        raise ScheduleError(f"{path}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScheduleError(f"{path}: not JSON ({e})") from None
    host_file = d.get("host_file") if isinstance(d, dict) else None
    if isinstance(host_file, dict):
        check_record(host_file, str(path))
    sched = Schedule.from_json(d)
    _check_writer(sched, d.get("writer_sha256"), path)
    v = d.get("violation")
    return sched, v if isinstance(v, dict) else None


def _check_writer(sched: Schedule, recorded: Any, path: Path) -> None:
    """Refuse a replay whose compiled writer is not the one the file was saved with."""
    if not sched.scenario.writer or recorded is None:
        return
    from emu.image.writer import load_writer

    now = load_writer(sched.scenario.writer).sha256
    if now != recorded:
        raise ScheduleError(
            f"{path}: the writer {sched.scenario.writer} changed since this file was saved "
            f"(sha256 {str(recorded)[:16]}, now {now[:16]}): replay with the writer it was "
            "saved with"
        )
