"""Schedule files saved before choices were typed still replay to the same run, and choice
labels parse back to the choices they name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emu.engine.choice import Migrate, RunHost, RunTask, SpeculativeTsc, Stay
from emu.engine.executor import Executor
from emu.engine.run import Run
from emu.errors import ScheduleError
from emu.search.replay import Replay
from emu.search.schedule import load_file, parse_choice

DATA = Path(__file__).with_name("data")


def outcome(run: Run) -> dict[str, Any]:
    """The run as the JSON the fixture's `.outcome.json` holds."""
    return {
        "reads": [
            [r.label, r.vcpu, r.start, r.end, r.outcome, r.value, [list(o) for o in r.ops]]
            for r in run.reads
        ],
        "host": [[e.t, e.step.label] for e in run.host],
        "points": run.points,
        "steps": run.steps,
        "stopped": run.stopped,
    }


@pytest.mark.parametrize("name", ["mixed", "spec"])
def test_a_schedule_saved_by_the_string_choice_code_replays_identically(name):
    sched, _ = load_file(DATA / f"schedule-main-{name}.json")
    expected = json.loads((DATA / f"schedule-main-{name}.outcome.json").read_text())
    ex = Executor(sched.scenario)
    assert ex.image.sha256 == sched.image_sha256
    run = ex.run(Replay(sched.choices))
    assert outcome(run) == expected
    # The run records the choices the file holds, and they save as the same labels.
    assert tuple(run.choices) == sched.choices
    saved = json.loads((DATA / f"schedule-main-{name}.json").read_text())["choices"]
    assert sched.to_json()["choices"] == saved


def test_labels_parse_back_to_the_choices_they_name():
    for choice in (RunTask(3), RunHost(), Stay(), Migrate(0, 2), SpeculativeTsc(0)):
        assert parse_choice(choice.label) == choice
    assert parse_choice("tsc-12") == SpeculativeTsc(12)
    for bad in ("t", "tx", "host1", "t0>", "t0>v", "tsc-", "v1", ""):
        with pytest.raises(ScheduleError):
            parse_choice(bad)
