"""emu.api: the CLI's records from Python (fuzz, replay, trace, explain, check)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from emu import api
from emu.cli import main
from emu.errors import BAD_INPUT, ScheduleError
from emu.search.schedule import Finding


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    return api.fuzz("modern", "kvm-legacy-copy", out=out), out


def test_fuzz_finds_and_saves_what_the_cli_finds(found, tmp_path, capsys):
    outcome, out = found
    f = outcome.finding
    assert isinstance(f, Finding) and f.oracle == "consistent"
    assert outcome.path is not None and outcome.path.parent == out
    assert main(["fuzz", "--out", str(tmp_path), "--no-db", "--json"]) == 1
    cli = json.loads(capsys.readouterr().out)
    assert (cli["schedule"], cli["oracle"], cli["message"]) == (
        f.schedule.compact(),
        f.oracle,
        f.message,
    )
    assert json.loads(outcome.path.read_text()) == f.to_json()


def test_replay_reproduces_from_the_record_or_its_file(found):
    outcome, _ = found
    for what in (outcome.finding, outcome.path, str(outcome.path)):
        again = api.replay(what)
        assert again.reproduced and again.verdict == "violation"
        assert again.violation is not None and again.violation.message == outcome.finding.message
    plain = api.replay(outcome.finding.schedule)
    assert plain.recorded is None and not plain.reproduced and plain.violations


def test_trace_is_what_the_cli_prints(found, capsys):
    outcome, _ = found
    assert main(["trace", str(outcome.path)]) == 1
    assert api.trace(outcome.path).text() == capsys.readouterr().out


def test_check_returns_the_catalogs_results(tmp_path):
    (r,) = api.check("modern", only=["kvm-legacy-copy-1vcpu"], witnesses=False, max_schedules=50)
    assert r.name == "image/kvm-legacy-copy-1vcpu" and r.ok and r.schedules == 100
    names = [e.name for e in api.entries(only=["modern/kvm-legacy-copy"])]
    assert names == ["modern/kvm-legacy-copy", "modern/kvm-legacy-copy-1vcpu"]


def test_bad_input_raises_what_the_cli_turns_into_exit_2(found, tmp_path):
    outcome, _ = found
    with pytest.raises(BAD_INPUT):
        api.fuzz("modern", "no-such-host")
    with pytest.raises(BAD_INPUT):
        api.entries("modern", only=["no such scenario"])
    other = replace(outcome.finding.schedule, image_sha256="0" * 64)
    with pytest.raises(ScheduleError, match="recorded for image sha256 0000"):
        api.replay(other)
    with pytest.raises(BAD_INPUT):
        api.replay(tmp_path / "missing.json")
