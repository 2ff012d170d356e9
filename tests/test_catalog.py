"""The catalog and `vdsofuzz check`: parsing, expected verdicts, findings, JUnit, --image."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from emu.cli import main
from emu.engine.scenario import Scenario
from emu.image.loader import load as load_image
from emu.search import catalog
from emu.search.catalog import CatalogError, Result
from emu.search.fuzz import Campaign
from host_model.registry import HOSTS

ENTRIES = catalog.load()
BY_NAME = {e.name: e for e in ENTRIES}
VIOLATIONS = [e for e in ENTRIES if e.expect == "violation"]


# --- the shipped catalog ----------------------------------------------------------------


def test_every_entry_names_a_known_host_and_a_loadable_image():
    assert len(ENTRIES) >= 25
    for e in ENTRIES:
        assert e.scenario.host in HOSTS, e.name
        load_image(e.scenario.image)
        assert len(e.why) > 20, f"{e.name}: say why this verdict is expected"


#: The verdicts the brief states, each run here (not read from the catalog): (image, host,
#: scenario options, the verdict, its oracle).
BRIEF = [
    ("modern", "kvm", {}, "pass", None),
    ("modern", "kvm-masterclock", {}, "pass", None),
    ("modern", "kvm-migration-parked", {}, "pass", None),
    ("modern", "xen", {}, "pass", None),
    # KVM before 2016: a reader on vCPU 1 takes a torn copy of vCPU 0's page...
    ("modern", "kvm-legacy-copy", {}, "violation", "consistent"),
    # ...which a lone vCPU cannot see (it is out of guest mode while its page is copied).
    ("modern", "kvm-legacy-copy", {"vcpus": 1}, "pass", None),
    # The seed thread: vCPU 1 resumed on the destination before vCPU 0's page is current.
    ("modern", "kvm-migration", {}, "violation", "accurate"),
    ("modern", "unsynced-tsc", {}, "violation", "monotonic"),
    ("bug-unfenced-rdtsc", "kvm", {"speculative_tsc": True}, "violation", "consistent"),
    ("modern", "kvm", {"speculative_tsc": True}, "pass", None),
    ("percpu", "unsynced-tsc", {"task_migration": True}, "violation", None),
    ("percpu", "kvm", {"task_migration": True}, "pass", None),
]


@pytest.mark.parametrize(("image", "host", "opts", "verdict", "oracle"), BRIEF)
def test_the_verdicts_the_brief_states(image, host, opts, verdict, oracle):
    sc = Scenario(image=image, host=host, **opts)
    out = Campaign(sc).fuzz(strategy="random", seed=0, max_schedules=400)
    if verdict == "pass":
        assert out.finding is None and out.schedules == 400
    else:
        assert out.finding is not None, f"{image} against {host} {opts}: no violation"
        assert oracle is None or out.finding.oracle == oracle


# --- parsing -----------------------------------------------------------------------------


def _cat(*rows, **defaults):
    return {"format": catalog.FORMAT, "defaults": defaults, "scenarios": list(rows)}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"format": "other"}, "not a vdsofuzz catalog"),
        (_cat(), "no scenarios"),
        (_cat({"name": "a", "image": "modern", "expect": "maybe"}), "expect must be"),
        (_cat({"name": "a", "image": "modern", "expect": "pass", "oracle": "consistent"}), "only"),
        (_cat({"name": "a", "image": "modern", "expect": "violation", "oracle": "x"}), "oracle"),
        (_cat({"name": "a", "image": "modern", "expect": "pass", "colour": 1}), "unknown key"),
        (_cat({"name": "a", "expect": "pass"}), "no image"),
        (
            _cat({"name": "a", "image": "m", "expect": "pass"}, {"name": "a", "image": "m"}),
            "two scenarios",
        ),
        (_cat({"name": "a", "image": "m", "expect": "pass", "vcpus": 0}), "vcpus"),
        (_cat({"name": "a", "image": "m", "expect": "pass", "strategy": "magic"}), "strategy"),
    ],
)
def test_malformed_catalogs_are_rejected_with_the_reason(data, message):
    with pytest.raises(CatalogError, match=message):
        catalog.parse(data)


def test_defaults_apply_and_entries_override_them():
    (e,) = catalog.parse(
        _cat(
            {"name": "a", "image": "modern", "expect": "pass", "max_schedules": 7},
            strategy=["random", "hypothesis"],
            max_schedules=99,
            vcpus=3,
        )
    )
    assert e.strategies == ("random", "hypothesis")
    assert e.max_schedules == 7 and e.budget == 14
    assert e.scenario.vcpus == 3


# --- running: every expected violation reproduces, replays and traces --------------------


@pytest.mark.parametrize("entry", VIOLATIONS, ids=lambda e: e.name)
def test_violation_is_found_saved_replayed_and_traced(entry, tmp_path, capsys):
    res = catalog.run_entry(entry, tmp_path)
    assert res.ok, (res.got, res.message)
    assert res.finding and res.schedule
    path = res.finding
    with open(path) as fh:
        saved = json.load(fh)
    # an entry without an oracle accepts any violation; the file names the one found
    assert saved["violation"]["oracle"] == (entry.oracle or res.oracle)
    assert saved["scenario"]["task_migration"] == entry.scenario.task_migration
    assert saved["scenario"]["speculative_tsc"] == entry.scenario.speculative_tsc
    capsys.readouterr()
    assert main(["replay", path, "--json"]) == 1
    replay = json.loads(capsys.readouterr().out)
    assert replay["reproduced"] and replay["oracle"] == (entry.oracle or res.oracle)
    assert main(["trace", path]) == 1
    text = capsys.readouterr().out
    assert f"VIOLATION {entry.oracle or res.oracle}" in text
    assert f"<-- {text.split('VIOLATION ')[1].split(':')[0]}" in text


# --- check, JUnit, JSON --------------------------------------------------------------------


def _results() -> list[Result]:
    return [
        Result("a/ok", "modern", "kvm", "-", "pass", None, "pass", schedules=10, elapsed=1.0),
        Result(
            "b/bad",
            "modern",
            "kvm",
            "-",
            "violation",
            "consistent",
            "violation",
            oracle="monotonic",
            message="went back",
            elapsed=0.5,
        ),
        Result("c/err", "nope", "kvm", "-", "pass", None, "error", message="no image"),
        Result(
            "d/found",
            "modern",
            "kvm-legacy-copy",
            "-",
            "violation",
            "consistent",
            "violation",
            oracle="consistent",
            finding="out/d.json",
        ),
    ]


def test_verdict_matching():
    ok, bad, err, found = _results()
    assert ok.ok and found.ok
    assert not bad.ok  # right verdict, wrong oracle
    assert not err.ok


def test_junit_xml_parses_with_the_right_counts():
    root = ET.fromstring(catalog.junit(_results()))
    (suite,) = root.findall("testsuite")
    assert suite.get("tests") == "4"
    assert suite.get("failures") == "1"
    assert suite.get("errors") == "1"
    assert suite.get("skipped") == "0"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["a/ok", "b/bad", "c/err", "d/found"]
    assert cases[1].find("failure") is not None and cases[1].find("error") is None
    assert cases[2].find("error") is not None
    assert cases[0].find("failure") is None and cases[3].find("failure") is None
    assert "out/d.json" in cases[3].find("system-out").text
    assert float(suite.get("time")) == pytest.approx(1.5)


def test_matrix_and_markdown_show_every_row_and_the_differences():
    text = catalog.matrix(_results())
    assert text.count("DIFFERS") == 2  # rows b and c
    assert "4 scenarios, 2 as expected, 2 differ" in text
    md = catalog.markdown(_results())
    assert md.count("\n| ") == 4 and md.startswith("| scenario") and "**differs**" in md


def test_check_cli_exit_codes_junit_and_json(tmp_path, capsys):
    cat = _cat(
        {"name": "pass-ok", "image": "modern", "host": "kvm", "expect": "pass"},
        {
            "name": "violation-ok",
            "image": "bug-no-retry",
            "expect": "violation",
            "oracle": "consistent",
        },
        {"name": "wrong", "image": "bug-no-retry", "expect": "pass"},
        {"name": "broken", "image": str(tmp_path / "missing.so"), "expect": "pass"},
        strategy="random",
        max_schedules=300,
    )
    path = tmp_path / "cat.json"
    path.write_text(json.dumps(cat))
    junit = tmp_path / "junit.xml"
    out = tmp_path / "findings"
    argv = ["check", "--catalog", str(path), "--out", str(out), "--jobs", "2"]
    assert main(argv + ["--junit", str(junit)]) == 1
    text = capsys.readouterr().out
    assert "4 scenarios, 2 as expected, 2 differ" in text
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "1", "1")
    assert sorted(p.name for p in out.iterdir()) == ["violation-ok.json", "wrong.json"]
    assert main(argv + ["--json", "--only=-ok"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] and [s["name"] for s in d["scenarios"]] == ["pass-ok", "violation-ok"]
    assert main(argv + ["--only", "nothing-matches"]) == 2


def test_check_image_runs_the_reference_matrix_on_that_image():
    assert catalog.family("hyperv") == "hvclock"
    assert catalog.family("modern-i386") == "pvclock"
    entries = catalog.for_image(ENTRIES, "vcpu0-i386")
    refs = [e for e in ENTRIES if e.reference and e.scenario.image == "modern"]
    assert len(entries) == len(refs)
    for e, ref in zip(entries, refs, strict=True):
        assert e.scenario.image == "vcpu0-i386"
        assert e.name == ref.name.replace("modern", "image", 1)
        # any violation matches for a user's image: another reader may break another oracle
        assert (e.expect, e.oracle) == (ref.expect, None)
        assert e.scenario.host == ref.scenario.host
    hv = catalog.for_image(ENTRIES, "hyperv-i386")
    assert {e.scenario.host for e in hv} == {"hyperv"}


def test_fuzz_cli_takes_the_machine_options(tmp_path, capsys):
    argv = ["fuzz", "--image", "bug-unfenced-rdtsc", "--host", "kvm", "--strategy", "random"]
    argv += ["--max-schedules"]
    argv += ["1500", "--no-db", "--out", str(tmp_path), "--json", "--speculative-tsc"]
    assert main(argv) == 1
    d = json.loads(capsys.readouterr().out)
    with open(d["finding"]) as fh:
        saved = json.load(fh)
    assert saved["scenario"]["speculative_tsc"] is True
    assert "tsc-" in d["schedule"]
    argv = ["fuzz", "--image", "percpu", "--host", "unsynced-tsc", "--task-migration"]
    argv += ["--strategy", "random", "--max-schedules", "1500", "--no-db", "--out", str(tmp_path)]
    assert main(argv + ["--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert ">v" in d["schedule"]


def test_every_bundled_build_gets_its_home_verdict():
    from emu.image.loader import manifest

    homes = catalog.homes()
    images = manifest()["images"]
    assert {e["reader"] for e in images} <= set(homes), "every reader has a home scenario"
    entries = catalog.for_builds(ENTRIES, homes, schedules=200)
    assert len(entries) == len(images)
    results = catalog.check(entries, out=None, jobs=2)
    wrong = [f"{r.name}: expected {r.expected}, got {r.got}" for r in results if not r.ok]
    assert not wrong, wrong
    # every seeded bug, in every build, breaks an oracle; every correct build passes
    for r, img in zip(results, images, strict=True):
        assert r.verdict == ("violation" if img.get("bug") else "pass"), r.name


def test_builds_and_image_do_not_go_together(capsys):
    assert main(["check", "--builds", "--image", "modern"]) == 2
    assert "do not go together" in capsys.readouterr().err
