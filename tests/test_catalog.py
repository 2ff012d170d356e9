"""The catalog and `vdsofuzz check`: parsing, expected verdicts, witnesses, findings, JUnit,
--image, the sensitivity matrix."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from emu.cli import main
from emu.engine.scenario import Scenario
from emu.image.loader import load as load_image
from emu.report import check as report
from emu.search import catalog, sensitivity
from emu.search.catalog import CatalogError, Outcome, Result
from emu.search.fuzz import Fuzzer
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
    out = Fuzzer(sc).fuzz(strategy="random", seed=0, max_schedules=400)
    if verdict == "pass":
        assert out.finding is None and out.schedules == 400
    else:
        assert out.finding is not None, f"{image} against {host} {opts}: no violation"
        assert oracle is None or out.finding.oracle == oracle


# --- parsing -----------------------------------------------------------------------------


W = ["bug-no-retry"]


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
        (_cat({"name": "a", "image": "m", "expect": "violation", "oracle": []}), "oracle"),
        (_cat({"name": "a", "image": "m", "expect": "violation", "oracle": ["x"]}), "oracle"),
        (_cat({"name": "a", "image": "modern", "expect": "pass", "colour": 1}), "unknown key"),
        (_cat({"name": "a", "expect": "pass", "witness": W}), "no image"),
        (
            _cat({"name": "a", "image": "m", "expect": "pass", "witness": W}, {"name": "a"}),
            "two scenarios",
        ),
        (_cat({"name": "a", "image": "m", "expect": "pass", "witness": W, "vcpus": 0}), "vcpus"),
        (_cat({"name": "a", "image": "m", "expect": "violation", "strategy": "magic"}), "strateg"),
        (_cat({"name": "a/b", "image": "modern", "expect": "pass"}), "a/b: .*names a witness"),
        (_cat({"name": "a/b", "image": "m", "expect": "pass", "witness": []}), "a/b: witness"),
        (
            _cat({"name": "a/b", "image": "m", "expect": "pass", "witness": ["bug-nope"]}),
            "a/b: witness 'bug-nope' is not a known image",
        ),
        (
            _cat({"name": "a", "image": "m", "expect": "pass", "witness": [{"oracle": "x"}]}),
            "a witness is a name",
        ),
        (_cat({"name": "a", "image": "m", "expect": "violation", "witness": W}), "only for"),
    ],
)
def test_malformed_catalogs_are_rejected_with_the_reason(data, message):
    with pytest.raises(CatalogError, match=message):
        catalog.parse(data)


def test_defaults_apply_and_entries_override_them():
    (e,) = catalog.parse(
        _cat(
            {"name": "a", "image": "modern", "expect": "pass", "max_schedules": 7, "witness": W},
            strategy=["random", "hypothesis"],
            max_schedules=99,
            vcpus=3,
        )
    )
    assert e.strategies == ("random", "hypothesis")
    assert e.max_schedules == 7 and e.budget == 28  # the witness gets the same budget
    assert e.scenario.vcpus == 3
    assert e.witnesses == (catalog.Witness("bug-no-retry"),)


def test_witnesses_and_oracle_lists_parse():
    rows = [
        {
            "name": "p",
            "image": "modern",
            "expect": "pass",
            "witness": [
                "bug-no-retry",
                {"image": "bug-stale-flags", "oracle": ["contract", "accurate"]},
            ],
        },
        {
            "name": "v",
            "image": "percpu",
            "expect": "violation",
            "oracle": ["accurate", "monotonic"],
        },
    ]
    p, v = catalog.parse(_cat(*rows))
    assert p.witnesses[1] == catalog.Witness("bug-stale-flags", ("contract", "accurate"))
    assert v.oracles == ("accurate", "monotonic") and v.expected == "violation (accurate|monotonic)"


# --- running: every expected violation reproduces, replays and traces --------------------


@pytest.mark.parametrize("entry", VIOLATIONS, ids=lambda e: e.name)
def test_violation_is_found_saved_replayed_and_traced(entry, tmp_path, capsys):
    res = catalog.run_entry(entry, tmp_path)
    assert res.ok, (res.got, res.message)
    assert res.finding and res.schedule
    path = res.finding
    with open(path) as fh:
        saved = json.load(fh)
    # an entry with a list of oracles accepts any of them; the file names the one found
    assert saved["violation"]["oracle"] == res.oracle and res.oracle in entry.oracles
    assert saved["scenario"]["task_migration"] == entry.scenario.task_migration
    assert saved["scenario"]["speculative_tsc"] == entry.scenario.speculative_tsc
    capsys.readouterr()
    assert main(["replay", path, "--json"]) == 1
    replay = json.loads(capsys.readouterr().out)
    assert replay["reproduced"] and replay["oracle"] == res.oracle
    assert main(["trace", path]) == 1
    text = capsys.readouterr().out
    assert f"VIOLATION {res.oracle}" in text
    assert f"<-- {text.split('VIOLATION ')[1].split(':')[0]}" in text


## --- check, JUnit, JSON --------------------------------------------------------------------


def _results() -> list[Result]:
    missed = Outcome("bug-no-retry", "pass", schedules=600)
    return [
        Result("a/ok", "modern", "kvm", "-", "pass", (), "pass", schedules=10, elapsed=1.0),
        Result(
            "b/bad",
            "modern",
            "kvm",
            "-",
            "violation",
            ("consistent",),
            "violation",
            oracle="monotonic",
            message="went back",
            elapsed=0.5,
        ),
        Result("c/err", "nope", "kvm", "-", "pass", (), "error", message="no image"),
        Result(
            "d/found",
            "modern",
            "kvm-legacy-copy",
            "-",
            "violation",
            ("consistent",),
            "violation",
            oracle="consistent",
            finding="out/d.json",
        ),
        Result("e/vac", "modern", "xen", "-", "pass", (), "vacuous", witnesses=[missed]),
    ]


def test_verdict_matching():
    ok, bad, err, found, vac = _results()
    assert ok.ok and found.ok
    assert not bad.ok  # right verdict, wrong oracle
    assert not err.ok and not vac.ok
    assert vac.got == "vacuous (bug-no-retry not caught)"


def test_junit_xml_parses_with_the_right_counts():
    root = ET.fromstring(report.junit(_results()))
    (suite,) = root.findall("testsuite")
    assert suite.get("tests") == "5"
    assert suite.get("failures") == "2"
    assert suite.get("errors") == "1"
    assert suite.get("skipped") == "0"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["a/ok", "b/bad", "c/err", "d/found", "e/vac"]
    assert cases[1].find("failure") is not None and cases[1].find("error") is None
    assert cases[1].find("failure").get("type") == "verdict"
    assert cases[4].find("failure").get("type") == "vacuous"
    assert cases[2].find("error") is not None
    assert cases[0].find("failure") is None and cases[3].find("failure") is None
    assert "out/d.json" in cases[3].find("system-out").text
    assert float(suite.get("time")) == pytest.approx(1.5)


def test_matrix_and_markdown_show_every_row_and_the_differences():
    text = report.matrix(_results())
    assert text.count("DIFFERS") == 3  # rows b, c and e
    assert "5 scenarios, 2 as expected, 3 differ (1 vacuous)" in text
    assert "witness bug-no-retry: pass in 600 schedules" in text
    md = report.markdown(_results())
    assert md.count("\n| ") == 5 and md.startswith("| scenario") and "**differs**" in md
    assert "`bug-no-retry` **not caught**" in md
    # An oracle list keeps its bar inside a cell instead of splitting it.
    either = Result(
        "m",
        "percpu",
        "unsynced-tsc",
        "-",
        "violation",
        ("accurate", "monotonic"),
        "violation",
        oracle="monotonic",
    )
    row = report.markdown([either]).splitlines()[-1]
    assert "violation (accurate\\|monotonic)" in row and row.count(" | ") == 7
    d = report.to_json(_results(), wall=2.0)
    assert d["vacuous"] == ["e/vac"] and d["elapsed"] == 2.0 and not d["ok"]
    assert d["scenarios"][4]["witnesses"][0]["caught"] is False


def test_a_pass_whose_witness_is_not_caught_is_vacuous(tmp_path):
    # kvm vcpu=1 rewrites vCPU 1's page, which a reader of vCPU 0's page never reads: the
    # reader without a retry passes too, so the scenario's pass means nothing
    (vacuous, real) = catalog.parse(
        _cat(
            {"name": "v", "image": "modern", "params": {"vcpu": 1}, "expect": "pass", "witness": W},
            {"name": "r", "image": "modern", "expect": "pass", "witness": W},
            strategy="random",
            max_schedules=300,
        )
    )
    res = catalog.run_entry(vacuous, tmp_path)
    assert (res.verdict, res.ok) == ("vacuous", False)
    assert [(w.image, w.verdict, w.schedules) for w in res.witnesses] == [
        ("bug-no-retry", "pass", 300)
    ]
    assert res.cpu > 0 and res.elapsed > 0
    res = catalog.run_entry(real, tmp_path)
    assert res.ok and res.witnesses[0].caught and res.witnesses[0].oracle == "consistent"


def test_check_cli_exit_codes_junit_and_json(tmp_path, capsys):
    cat = _cat(
        {"name": "pass-ok", "image": "modern", "host": "kvm", "expect": "pass", "witness": W},
        {
            "name": "violation-ok",
            "image": "bug-no-retry",
            "expect": "violation",
            "oracle": "consistent",
        },
        {"name": "wrong", "image": "bug-no-retry", "expect": "pass", "witness": W},
        {"name": "broken", "image": str(tmp_path / "missing.so"), "expect": "pass", "witness": W},
        {
            "name": "vacuous",
            "image": "modern",
            "params": {"vcpu": 1},
            "expect": "pass",
            "witness": W,
        },
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
    assert "5 scenarios, 2 as expected, 3 differ (1 vacuous)" in text
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "2", "1")
    assert sorted(p.name for p in out.iterdir()) == ["violation-ok.json", "wrong.json"]
    assert main(argv + ["--json", "--only=-ok"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] and [s["name"] for s in d["scenarios"]] == ["pass-ok", "violation-ok"]
    assert d["scenarios"][0]["witnesses"][0]["caught"] is True
    assert d["elapsed"] > 0 and d["cpu"] > 0 and d["scenarios"][0]["cpu"] > 0
    assert main(argv + ["--json", "--only=vacuous"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["vacuous"] == ["vacuous"] and d["scenarios"][0]["verdict"] == "vacuous"
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
        # the expected oracle stays: another oracle is another behaviour
        assert (e.expect, e.oracles, e.witnesses) == (ref.expect, ref.oracles, ref.witnesses)
        assert e.scenario.host == ref.scenario.host
    hv = catalog.for_image(ENTRIES, "hyperv-i386")
    assert {e.scenario.host for e in hv} == {"hyperv"}


def test_check_image_compares_the_oracle_too(tmp_path, capsys):
    # the 4.5-era reader breaks the contract on a migration where the reference reader
    # returns a time 1 s off: both violations, but not the same behaviour
    argv = ["check", "--image", "vcpu0", "--only", "image/kvm-migration-stable"]
    argv += ["--only", "image/kvm-migration", "--out", str(tmp_path), "--json", "--jobs", "1"]
    assert main(argv) == 1
    d = json.loads(capsys.readouterr().out)
    rows = {s["name"]: s for s in d["scenarios"]}
    mig = rows["image/kvm-migration"]
    assert (mig["verdict"], mig["oracle"], mig["expected_oracle"]) == (
        "violation",
        "contract",
        ["accurate"],
    )
    assert not mig["ok"]
    stable = rows["image/kvm-migration-stable"]
    assert stable["oracle"] == "monotonic" and stable["ok"]


# --- the sensitivity matrix ---------------------------------------------------------------

SPEC = sensitivity.spec()
SEQLOCK_BUGS = ["bug-no-retry", "bug-no-odd-check", "bug-no-barrier"]


def _cells(rows, columns):
    s = replace(
        SPEC,
        rows=[r for r in SPEC.rows if r.image in rows],
        columns=[c for c in SPEC.columns if c.name in columns],
    )
    assert len(s.rows) == len(rows) and len(s.columns) == len(columns)
    return sensitivity.run(s, jobs=2)


def test_matrix_rows_are_every_seeded_bug_and_reasons_are_computed():
    from emu.image.loader import manifest

    bugs = {e["reader"] for e in manifest()["images"] if e.get("bug")}
    assert {r.image for r in SPEC.rows} == bugs
    m = _cells(["bug-no-retry", "bug-hyperv-no-retry"], ["kvm vcpu=1", "hyperv", "kvm"])
    assert m.cell("bug-no-retry", "kvm vcpu=1").reason == (
        "the host updates pvti1, which the reader never reads (pvti0)"
    )
    assert m.cell("bug-no-retry", "hyperv").reason.startswith("the host writes hvclock")
    assert m.cell("bug-hyperv-no-retry", "kvm").status == sensitivity.NOT_EXPRESSIBLE
    caught = m.cell("bug-hyperv-no-retry", "hyperv")
    # Either way the missing re-check shows: a torn pair of fields, or fields read while
    # the host had invalidated the page (sequence 0).
    assert caught.status == sensitivity.CAUGHT and caught.oracle in ("consistent", "contract")
    md = report.sensitivity_markdown(m)
    assert md.count("n/a [") == 4 and "[1] the host" in md


def test_matrix_cli_picks_rows_and_columns_and_refuses_nothing(capsys):
    argv = ["check", "--matrix", "--only", "bug-hyperv", "--only", "hyperv", "--only", "xen"]
    assert main(argv + ["--json", "--jobs", "1"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["rows"] == ["bug-hyperv-no-retry"] and "xen" in d["columns"]
    assert {c["status"] for c in d["cells"] if c["column"].startswith("xen")} == {"not expressible"}
    assert main(["check", "--matrix", "--only", "no-such-thing"]) == 2
    assert main(["check", "--matrix", "--image", "modern"]) == 2


def test_every_seqlock_bug_is_caught_by_every_host_rewriting_a_page_being_read():
    # kvm (parked writer, vCPU 1 reads vCPU 0's page), kvm park=0 and xen: every host here
    # rewrites a page another vCPU may be reading at that moment, so a reader that breaks
    # the seqlock must be caught, with the matrix's fixed seed and budget
    m = _cells(SEQLOCK_BUGS, ["kvm", "kvm park=0", "xen"])
    missed = [f"{c.row} x {c.column}: {c.status}" for c in m.cells if c.status != "caught"]
    assert not missed, missed


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
