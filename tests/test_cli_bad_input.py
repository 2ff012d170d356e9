"""Values that make a scenario meaningless are bad input: one line naming the option (or
host parameter), the value and the accepted range, exit 2; the catalog gets the same checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emu.cli import main
from emu.engine.scenario import Scenario
from emu.errors import UsageError
from emu.search import catalog
from host_model.base import HostParamError
from host_model.registry import HOSTS, make_host


def _fuzz(tmp_path: Path, *extra: str) -> int:
    return main(["fuzz", "--out", str(tmp_path), "--no-trace", "--no-db", "--host", "kvm", *extra])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--max-schedules", "-1"], ["--max-schedules", "-1", "1 or more"]),
        (["--max-schedules", "0"], ["--max-schedules", "0", "1 or more"]),
        (["--param", "updates=-1"], ["'kvm'", "updates=-1", "0..100"]),
        (["--param", "updates=abc"], ["'kvm'", "updates='abc'", "not an integer", "0..100"]),
        (["--param", "park=2"], ["park=2", "0..1"]),
        (["--param", "vcpu=-2"], ["vcpu=-2", "-1..63"]),
        (["--param", "nope=1"], ["no parameter 'nope'", "updates"]),
        (["--param", "updates"], ["--param", "NAME=VALUE", "'updates'"]),
        (["--host", "kvm-migration", "--param", "order=sideways"], ["order='sideways'", "or"]),
        (["--host", "nope"], ["unknown host model 'nope'", "vdsofuzz hosts"]),
        (["--accuracy-ns", "-5"], ["--accuracy-ns", "-5", "1 or more"]),
        (["--accuracy-ns", "0"], ["--accuracy-ns", "0", "1 or more"]),
        (["--vcpus", "0"], ["--vcpus", "0", "1..64"]),
        (["--vcpus", "65"], ["--vcpus", "65", "1..64"]),
        (["--reads", "0"], ["--reads", "0", "1..1000"]),
        (["--depth", "0", "--strategy", "pct"], ["--depth", "0", "1 or more"]),
        (["--preemptions", "-1"], ["--preemptions", "-1", "0 or more"]),
        (["--timekeeping", "-1"], ["--timekeeping", "-1", "0 or more"]),
        (["--clock", "CLOCK_FOO"], ["--clock", "CLOCK_FOO", "CLOCK_MONOTONIC_RAW"]),
        (["--clock", "CLOCK_REALTIME"], ["--clock", "CLOCK_REALTIME", "real vDSO"]),
        (["--timekeeping", "1"], ["--timekeeping", "real vDSO"]),
    ],
)
def test_meaningless_fuzz_options_are_one_line_naming_option_value_and_range(
    tmp_path, capsys, args, words
):
    assert _fuzz(tmp_path, "--max-schedules", "5", *args) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert err.startswith("vdsofuzz: ") and "\n" not in err, err
    for w in words:
        assert w in err, (w, err)
    assert "fuzzing" not in cap.out, "refused before anything ran"
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--jobs", "0"], ["--jobs", "0", "1 or more"]), (["--schedules", "0"], ["--schedules"])],
)
def test_meaningless_check_options_are_refused(tmp_path, capsys, args, words):
    assert main(["check", "--only", "kvm-legacy", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and all(w in err for w in words), err


def test_a_real_vdso_gets_the_same_clock_check(monkeypatch):
    # The check is on the scenario, before any image is loaded: a real vDSO's path gets it
    # too, and a lowercase short name is the same clock as its CLOCK_ spelling.
    with pytest.raises(UsageError, match="CLOCK_BOGUS.*CLOCK_MONOTONIC"):
        Scenario(image="/some/vdso64.so", clock="CLOCK_BOGUS")
    assert Scenario(image="/some/vdso64.so", clock="monotonic_raw").clock == "monotonic_raw"


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_every_host_parameter_declares_its_range_and_refuses_values_outside(name):
    cls = HOSTS[name]
    assert cls.params, name
    make_host(name, {p.name: p.default for p in cls.params})  # the defaults are in range
    for p in cls.params:
        assert p.accepted(), (name, p.name)
        if p.choices:
            with pytest.raises(HostParamError, match=f"{p.name}='bogus'"):
                make_host(name, {p.name: "bogus"})
            continue
        for bad in ([p.low - 1] if p.low is not None else []) + (
            [p.high + 1] if p.high is not None else []
        ):
            with pytest.raises(HostParamError, match=rf"{name}.*{p.name}={bad}.*{p.accepted()}"):
                make_host(name, {p.name: bad})
        with pytest.raises(HostParamError, match="not an integer"):
            make_host(name, {p.name: "abc"})


def _cat(*rows):
    return {"format": catalog.FORMAT, "scenarios": list(rows)}


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({"params": {"updates": -1}}, ["updates=-1", "0..100"]),
        ({"params": {"updates": "abc"}}, ["updates='abc'", "integer"]),
        ({"accuracy_ns": -5}, ["--accuracy-ns", "-5"]),
        ({"reads": 0}, ["--reads", "0"]),
        ({"max_schedules": -1}, ["max_schedules", "-1", "1 or more"]),
        ({"host": "nope"}, ["unknown host model"]),
    ],
)
def test_a_catalog_with_a_meaningless_value_fails_to_load_naming_the_entry(
    tmp_path, capsys, row, words
):
    path = tmp_path / "cat.json"
    entry = {
        "name": "the-bad-one",
        "image": "modern",
        "host": "kvm",
        "expect": "pass",
        "witness": ["bug-no-retry"],
        **row,
    }
    path.write_text(json.dumps(_cat(entry)))
    assert main(["check", "--catalog", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "the-bad-one" in err, err
    for w in words:
        assert w in err, (w, err)
