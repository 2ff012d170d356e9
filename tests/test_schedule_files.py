"""Schedule files saved before choices were typed still replay to the same run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emu.engine.executor import Executor
from emu.engine.run import Run
from emu.search.replay import Replay
from emu.search.schedule import load_file

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
    # The run records the same choices, and they save to the same file text.
    saved = json.loads((DATA / f"schedule-main-{name}.json").read_text())["choices"]
    assert [[p, c if isinstance(c, str) else c.label] for p, c in run.choices] == saved
