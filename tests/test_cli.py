"""The command line: exit codes, findings on disk, replay and trace, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emu.cli import main


def _fuzz(tmp_path: Path, *extra: str) -> int:
    return main(["fuzz", "--out", str(tmp_path), "--no-trace", "--host", "kvm", *extra])


@pytest.mark.parametrize("image", ["bug-no-retry", "bug-no-odd-check"])
def test_buggy_reader_gives_a_consistent_violation_that_replays(tmp_path, capsys, image):
    assert _fuzz(tmp_path, "--image", image, "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "violation"
    assert out["oracle"] == "consistent"
    finding = Path(out["finding"])
    data = json.loads(finding.read_text())
    assert data["violation"]["oracle"] == "consistent"
    assert 1 <= len(data["choices"]) <= 3, "shrunk to a handful of preemptions"
    assert main(["replay", str(finding), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["reproduced"] is True


def test_correct_reader_passes(tmp_path, capsys):
    assert (
        _fuzz(tmp_path, "--image", "modern", "--host", "kvm", "--max-schedules", "300", "--json")
        == 0
    )
    assert json.loads(capsys.readouterr().out)["verdict"] == "pass"


def test_same_seed_same_finding_and_byte_identical_trace(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _fuzz(a, "--image", "bug-no-odd-check", "--seed", "7", "--no-db") == 1
    assert _fuzz(b, "--image", "bug-no-odd-check", "--seed", "7", "--no-db") == 1
    fa, fb = next(a.glob("finding-*.json")), next(b.glob("finding-*.json"))
    assert fa.read_text() == fb.read_text()
    capsys.readouterr()
    assert main(["trace", str(fa)]) == 1
    first = capsys.readouterr().out
    assert main(["trace", str(fa)]) == 1
    second = capsys.readouterr().out
    assert first == second
    assert "VIOLATION consistent" in first
    assert "read vcpu0.version=" in first
    assert "<-- consistent" in first


def test_bad_image_is_one_line_and_exit_2(tmp_path, capsys):
    p = tmp_path / "x.txt"
    p.write_text("not a reader")
    assert _fuzz(tmp_path, "--image", str(p)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an ELF" in err[0]


def test_schedule_for_another_image_is_refused(tmp_path, capsys):
    assert _fuzz(tmp_path, "--image", "bug-no-retry") == 1
    finding = next(tmp_path.glob("finding-*.json"))
    data = json.loads(finding.read_text())
    data["scenario"]["image"] = "modern"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["replay", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sha256" in err[0]


@pytest.mark.parametrize(
    "content", ["{not json", '{"format": "other"}', '{"format": "vdsofuzz-schedule/1"}']
)
def test_malformed_schedule_is_refused(tmp_path, capsys, content):
    p = tmp_path / "s.json"
    p.write_text(content)
    assert main(["replay", str(p)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_choice_that_does_not_fit_is_refused(tmp_path, capsys):
    assert _fuzz(tmp_path, "--image", "bug-no-retry") == 1
    finding = next(tmp_path.glob("finding-*.json"))
    data = json.loads(finding.read_text())
    data["choices"] = [[0, "t9"]]
    finding.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["replay", str(finding)]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_unknown_host_and_bad_param_are_usage_errors(tmp_path, capsys):
    assert _fuzz(tmp_path, "--host", "nope") == 2
    assert "vdsofuzz hosts" in capsys.readouterr().err
    assert _fuzz(tmp_path, "--param", "bogus=1") == 2
    assert "no parameter" in capsys.readouterr().err


def test_default_fuzz_finds_the_legacy_kvm_torn_read(tmp_path, capsys):
    assert main(["fuzz", "--out", str(tmp_path), "--no-trace", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["oracle"] == "consistent"
    data = json.loads(Path(out["finding"]).read_text())
    assert data["scenario"]["image"] == "modern"
    assert data["scenario"]["host"] == "kvm-legacy-copy"
