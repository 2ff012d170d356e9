"""`dpor` as a campaign strategy: a scenario's subtrees are shards whose union covers the
same classes as one dpor run, a seeded bug is found with random's signature, and a killed
campaign resumes its subtrees' searches to the same totals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from emu.campaign import dpor
from emu.campaign.driver import Campaign, Options
from emu.campaign.report import markdown, read
from emu.campaign.spec import parse
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Scheduler
from emu.search.dpor import DporStrategy
from emu.search.fuzz import Fuzzer
from emu.search.strategy import Result

SPEC = """strategies = {strategies}
chunk = 64
preemptions = {bound}
dpor_depth = 2
[[scenario]]
images = ["{image}"]
hosts = ["{host}"]
vcpus = 2
reads = 1
"""


def _spec(
    tmp: Path, bound: int, strategies: str = '["dpor"]', image: str = "modern", host: str = "kvm"
) -> Path:
    p = tmp / "spec.toml"
    p.write_text(SPEC.format(strategies=strategies, bound=bound, image=image, host=host))
    return p


def _campaign(spec: Path, out: Path, time_s: float) -> None:
    c = Campaign(parse(spec.read_text(), spec), Options(out, time_s, workers=1, interval=60))
    c.run(lambda _snap: None)


def _states(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "checkpoints").glob("*.json")}


def _single(bound: int, prefix: tuple = ()) -> DporStrategy:
    fz = Fuzzer(Scenario(image="modern", host="kvm", vcpus=2, reads=1))

    def run_one(s: Scheduler) -> Result:
        run, vs = fz.run(s)
        return Result(bool(vs), run.points)

    st = DporStrategy(bound, prefix=prefix)
    st.explore(run_one, 10**9)
    assert st.complete
    return st


def test_subtrees_cover_the_classes_of_one_run(tmp_path):
    out = tmp_path / "camp"
    _campaign(_spec(tmp_path, 1), out, 120)
    prefixes = json.loads(dpor.prefixes_path(out, 0).read_text())
    assert len(prefixes) > 1
    states = _states(out)
    dp = [states[f"s0-dpor-{k}"] for k in range(len(prefixes))]
    assert all(s["exhausted"] and not s["violated"] for s in dp)
    one = _single(1)
    assert dpor.classes(out, 0, len(prefixes)) == one.classes
    report = markdown(read(out))
    assert f"verified: within bound 1 ({len(one.classes)} distinct classes)" in report


def test_dpor_finds_the_seeded_bug_with_randoms_signature(tmp_path):
    out = tmp_path / "camp"
    spec = _spec(tmp_path, 1, '["random", "dpor"]', "bug-no-retry", "kvm-legacy-copy")
    _campaign(spec, out, 6)
    states = _states(out)
    by_dpor = {sid for k, s in states.items() if "-dpor-" in k for sid in s["hits"]}
    by_random = set(states["s0-random-0"]["hits"])
    assert by_dpor and by_dpor <= by_random
    assert any(s["violated"] for k, s in states.items() if "-dpor-" in k)
    assert by_dpor <= {p.stem for p in (out / "findings").glob("*.json")}
    assert "violation" in markdown(read(out))


def test_a_killed_dpor_campaign_resumes_to_the_same_totals(tmp_path):
    spec, out = _spec(tmp_path, 2), tmp_path / "camp"
    cmd = [sys.executable, "-m", "emu", "campaign", str(spec), "--out", str(out)]
    cmd += ["--time", "300s", "--workers", "1", "--json", "--interval", "0.2"]
    root = Path(__file__).parents[1]
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root)

    def started() -> bool:  # some subtree checkpointed, not all finished
        st = _states(out) if (out / "checkpoints").exists() else {}
        return any(s["schedules"] for s in st.values()) and not all(
            s["exhausted"] for s in st.values()
        )

    end = time.monotonic() + 120
    while not started() and proc.poll() is None:
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)
    assert proc.poll() is None, "the campaign ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = _states(out)
    assert not all(s["exhausted"] for s in killed.values())
    _campaign(spec, out, 300)  # resume in-process
    prefixes = [dpor.to_prefix(p) for p in json.loads(dpor.prefixes_path(out, 0).read_text())]
    states = _states(out)
    for k, prefix in enumerate(prefixes):
        ref = _single(2, prefix)
        st = states[f"s0-dpor-{k}"]
        assert st["exhausted"] and st["schedules"] == ref.executions
        assert st["classes"] == len(ref.classes)
    assert dpor.classes(out, 0, len(prefixes)) == _single(2).classes


def test_dpor_spec_keys_are_checked_with_their_line(tmp_path):
    import pytest

    from emu.campaign.spec import SpecError

    base = '[[scenario]]\nimages = ["modern"]\nhosts = ["kvm"]\n'
    for head, what in (("preemptions = -1\n", "preemptions"), ("dpor_depth = 1.5\n", "dpor_depth")):
        with pytest.raises(SpecError, match=rf":1: {what} must be an integer >= 0"):
            parse(head + 'strategies = ["dpor"]\n' + base, tmp_path / "s.toml")
    spec = parse('strategies = ["dpor"]\n' + base, tmp_path / "s.toml")
    assert (spec.dpor_depth, spec.preemptions) == (2, None)


def test_the_campaign_command_ends_with_each_scenarios_dpor_verdict(tmp_path, capsys):
    from emu.cli import main

    out = tmp_path / "camp"
    assert main(["campaign", str(_spec(tmp_path, 1)), "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    # A second session of a finished campaign has nothing left to run: it says the verdict.
    assert main(["campaign", str(_spec(tmp_path, 1)), "--out", str(out), "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("dpor ") and "verified: within bound 1" in line for line in lines)
