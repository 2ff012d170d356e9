"""A bug of ours is not bad input: `internal error:`, the scenario and the failing run's
schedule saved as a replay file, exit 70, and every finding saved before is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import emu.search.fuzz as fuzz_driver
from emu.cli import main
from emu.search import catalog
from emu.search.schedule import load_file
from host_model.kvm import Kvm
from host_model.registry import HOSTS


class FaultyKvm(Kvm):
    """KVM whose second host step raises: a host-model bug met in the middle of a run."""

    def steps(self, view):
        it = super().steps(view)
        yield next(it)
        raise RuntimeError("injected host fault")


def _finding(tmp_path: Path, capsys) -> Path:
    """A real finding saved in `tmp_path` by an ordinary run (the default torn read)."""
    argv = ["fuzz", "--out", str(tmp_path), "--no-trace", "--no-db", "--json"]
    assert main(argv + ["--strategy", "random"]) == 1
    return Path(json.loads(capsys.readouterr().out)["finding"])


def _internal(err: str, kind: str, message: str) -> Path:
    lines = err.strip().splitlines()
    lines = lines[next(i for i, ln in enumerate(lines) if "internal error" in ln) :]
    assert lines[0] == f"vdsofuzz: internal error: {kind}: {message}", lines
    assert any(line.strip().startswith("scenario: image modern, host kvm") for line in lines)
    assert "please report it" in err
    (saved,) = [ln.split()[1] for ln in lines if ln.strip().startswith("saved ")]
    return Path(saved)


def test_a_host_model_fault_mid_run_is_an_internal_error_with_its_replay_file(
    tmp_path, capsys, monkeypatch
):
    finding = _finding(tmp_path, capsys)
    kept = finding.read_bytes()
    monkeypatch.setitem(HOSTS, "kvm", FaultyKvm)
    argv = ["fuzz", "--out", str(tmp_path), "--no-trace", "--no-db", "--host", "kvm"]
    assert main(argv + ["--strategy", "random", "--max-schedules", "50"]) == 70
    err = capsys.readouterr().err
    saved = _internal(err, "RuntimeError", "injected host fault")
    assert "during the run" in err
    assert saved == tmp_path / "internal-error-1.json"
    data = json.loads(saved.read_text())
    assert data["internal_error"]["type"] == "RuntimeError"
    assert "injected host fault" in data["internal_error"]["traceback"]
    assert finding.read_bytes() == kept, "the earlier finding is untouched"
    # The saved run reproduces the fault, and a second report does not overwrite the first.
    assert main(argv + ["--strategy", "random", "--max-schedules", "50"]) == 70
    assert (tmp_path / "internal-error-2.json").exists()
    capsys.readouterr()
    assert main(["replay", str(saved)]) == 70
    assert "injected host fault" in capsys.readouterr().err
    # Once the bug is fixed the file replays as an ordinary schedule.
    monkeypatch.setitem(HOSTS, "kvm", Kvm)
    assert main(["replay", str(saved)]) in (0, 1)


def test_an_oracle_fault_saves_the_choices_of_the_judged_run(tmp_path, capsys, monkeypatch):
    judge = fuzz_driver.judge

    def faulty_judge(run, scenario):
        if run.choices:  # only runs that preempted: the schedule is in the report
            raise ZeroDivisionError("injected oracle fault")
        return judge(run, scenario)

    monkeypatch.setattr(fuzz_driver, "judge", faulty_judge)
    argv = ["fuzz", "--out", str(tmp_path), "--no-trace", "--no-db", "--host", "kvm"]
    for strategy in ("random", "hypothesis"):
        assert main(argv + ["--strategy", strategy, "--max-schedules", "200"]) == 70
        err = capsys.readouterr().err
        saved = _internal(err, "ZeroDivisionError", "injected oracle fault")
        assert "while judging the finished run" in err
        schedule, _ = load_file(saved)
        assert schedule.choices, "the failing run's preemptions are in the file"
        assert schedule.compact() in err
        assert schedule.scenario.host == "kvm" and schedule.scenario.image == "modern"
        saved.unlink()


@pytest.mark.parametrize("jobs", ["1", "2"])  # 2: the error crosses back from a worker
def test_check_reports_an_internal_error_and_keeps_the_findings_of_other_scenarios(
    tmp_path, capsys, monkeypatch, jobs
):
    cat = {
        "format": catalog.FORMAT,
        "defaults": {"strategy": "random"},
        "scenarios": [
            # Larger budget than the pass and its witness: runs first (longest first), and saves
            # its finding.
            {
                "name": "torn",
                "image": "bug-no-retry",
                "host": "kvm",
                "expect": "violation",
                "max_schedules": 9000,
            },
            {
                "name": "faulty",
                "image": "modern",
                "host": "kvm",
                "expect": "pass",
                "witness": ["bug-no-retry"],
            },
        ],
    }
    path = tmp_path / "cat.json"
    path.write_text(json.dumps(cat))
    out = tmp_path / "out"

    real = HOSTS["kvm"]

    def make(**values):  # only the modern reader's scenario meets the faulty host
        return (FaultyKvm if faulty[0] else real)(**values)

    faulty = [False]
    run_entry = catalog.run_entry

    def entry(e, o):
        faulty[0] = e.name == "faulty"
        return run_entry(e, o)

    monkeypatch.setattr(catalog, "run_entry", entry)
    monkeypatch.setitem(HOSTS, "kvm", make)
    argv = ["check", "--catalog", str(path), "--out", str(out), "--jobs", jobs]
    assert main(argv) == 70
    err = capsys.readouterr().err
    _internal(err, "RuntimeError", "injected host fault")
    assert (out / "torn.json").exists(), "the finding saved before the fault is kept"
    assert (out / "internal-error-1.json").exists()


def test_ctrl_c_still_keeps_the_smallest_violation_and_exits_130(tmp_path, capsys, monkeypatch):
    judge = fuzz_driver.judge
    calls = []

    def interrupted_judge(run, scenario):
        # Ctrl-C once, while Hypothesis shrinks the first violation it found.
        vs = judge(run, scenario)
        calls.append(bool(vs))
        if any(calls[:-1]) and calls.count("^C") == 0:
            calls.append("^C")
            raise KeyboardInterrupt
        return vs

    monkeypatch.setattr(fuzz_driver, "judge", interrupted_judge)
    argv = ["fuzz", "--out", str(tmp_path), "--no-trace", "--no-db", "--json"]
    assert main(argv + ["--strategy", "hypothesis"]) == 130
    out = json.loads(capsys.readouterr().out)
    assert out["interrupted"] is True and out["verdict"] == "violation"
    assert Path(out["finding"]).exists()
    assert not list(tmp_path.glob("internal-error-*"))


@pytest.mark.parametrize("argv", [["--help"], ["fuzz", "--help"], ["check", "--help"], ["hosts"]])
def test_help_and_hosts_start_without_the_emulator(argv):
    import subprocess
    import sys

    code = (
        "import sys\nfrom emu.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('unicorn', 'capstone', 'emu.engine.executor', "
        "'hypothesis') if m in sys.modules)\nprint('HEAVY', heavy)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert "HEAVY []" in res.stdout, res.stdout[-500:]


@pytest.mark.parametrize(
    "options", [{}, {"task_migration": True}, {"speculative_tsc": True, "image": "bug-no-barrier"}]
)
def test_a_run_that_raises_keeps_the_choices_made_before_it(options):
    # What an internal error saves for a run that raised: the choices the run made up to
    # the fault, the same as the full run's choices before that decision point.
    from emu.engine.scenario import Scenario
    from emu.search.random import RandomWalk

    class Fault(RandomWalk):
        def __init__(self, seed: int, at: int) -> None:
            super().__init__(seed)
            self.at = at

        def quiet_until(self, point, options):  # the lane must hand point `at` over
            return min(super().quiet_until(point, options), self.at)

        def choose(self, point, options, info):
            if point == self.at:
                raise RuntimeError("injected scheduler fault")
            return super().choose(point, options, info)

    sc = Scenario(**{"image": "modern", "host": "kvm", **options})
    executor = fuzz_driver.Fuzzer(sc).executor
    seen = 0
    for seed in range(30):
        full = executor.run(RandomWalk(seed))
        at = full.points // 2
        with pytest.raises(RuntimeError, match="injected"):
            executor.run(Fault(seed, at))
        kept = executor.last_run.choices
        assert kept == [c for c in full.choices if c[0] < at]
        seen += bool(kept)
    assert seen >= 5, "most random runs preempt before their middle"


def test_a_closed_pipe_is_not_an_internal_error(tmp_path):
    """`vdsofuzz trace F | head`: the reader going away stops us quietly (exit 141)."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "emu", "fuzz", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 141
    assert b"internal error" not in err and not list(tmp_path.glob("internal-error-*"))
