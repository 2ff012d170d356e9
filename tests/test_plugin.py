"""The pytest plugin, run through pytester: `--vdso-image` collects one item per catalog
host scenario, a seeded-bug image fails with its explanation and finding, a good image
passes, JUnit comes from pytest, the `vdsofuzz` fixture runs a user's own property."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import pytest

from emu import api

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent

#: The plugin is on by its entry point once the package is installed with it; a checkout
#: whose installed metadata predates the entry point loads it by module name.
INSTALLED = any(e.name == "vdsofuzz" for e in metadata.entry_points(group="pytest11"))
PLUGIN = () if INSTALLED else ("-p", "emu.pytest_plugin")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*PLUGIN, "-p", "no:cacheprovider", *args)


def test_vdso_image_collects_one_item_per_host_scenario_named_after_it(pytester):
    result = run(pytester, "--vdso-image", "modern", "--collect-only", "-q")
    names = {line.split("::", 1)[1] for line in result.outlines if line.startswith("modern::")}
    assert names == {e.name.split("/", 1)[1] for e in api.entries("modern")}
    assert {"kvm", "kvm-legacy-copy", "xen", "kvm-migration"} <= names
    assert result.ret == 0


def test_a_seeded_bug_fails_with_its_explanation_finding_and_replay_command(pytester):
    out = pytester.path / "findings"
    junit = pytester.path / "junit.xml"
    result = run(
        pytester,
        "--vdso-image",
        "bug-no-retry",
        "-k",
        "kvm and not legacy and not every and not masterclock and not migration",
        "--vdso-schedules",
        "1000",
        "--vdso-out",
        str(out),
        f"--junitxml={junit}",
    )
    result.assert_outcomes(failed=1)
    finding = out / "bug-no-retry" / "image_kvm.json"
    assert finding.is_file()
    text = result.stdout.str()
    assert "image/kvm on host kvm:" in text and "expected pass, got violation (consistent)" in text
    # The explanation of the saved finding, line by line, and what to run next.
    for line in api.explain(finding).text().splitlines()[:4]:
        assert line in text
    assert f"replay:  vdsofuzz replay {finding}" in text
    case = ET.parse(junit).getroot().find(".//testcase")
    assert case is not None and case.get("name") == "kvm"
    failure = case.find("failure")
    assert failure is not None and "shared-page loads, each with the store it read" in (
        failure.text or ""
    )


def test_a_good_image_passes(pytester):
    result = run(
        pytester,
        "--vdso-image",
        "modern",
        "-k",
        "kvm-legacy-copy and not 1vcpu or xen-parked",
        "--vdso-schedules",
        "500",
        "--vdso-out",
        str(pytester.path / "findings"),
    )
    result.assert_outcomes(passed=2)


def test_a_bad_image_is_one_usage_error(pytester):
    result = run(pytester, "--vdso-image", str(pytester.path / "missing.so"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if "--vdso-image" in line]
    assert len(errors) == 1 and "missing.so" in errors[0]


def test_the_fixture_runs_a_users_own_property_in_a_few_lines(pytester):
    pytester.makepyfile(
        test_mine="""
        def test_every_vcpu_updated_twice(vdsofuzz):
            out = vdsofuzz.fuzz("kvm", params={"vcpu": -1, "updates": 2}, max_schedules=200)
            vdsofuzz.assert_no_violation(out)

        def test_legacy_host(vdsofuzz):
            out = vdsofuzz.fuzz("kvm-legacy-copy", max_schedules=1000)
            vdsofuzz.assert_no_violation(out)

        def test_the_api_is_on_the_fixture(vdsofuzz):
            assert vdsofuzz.image == "modern"
            assert vdsofuzz.replay is not None and vdsofuzz.explain is not None
        """
    )
    # -k test_: the user's tests only, not the image's catalog items.
    result = run(pytester, "--vdso-image", "modern", "-k", "test_")
    result.assert_outcomes(passed=2, failed=1)
    text = result.stdout.str()
    assert (
        "VIOLATION of consistent" in text
        and "shared-page loads, each with the store it read" in text
    )
    assert "replay:  vdsofuzz replay " in text


def test_loading_the_plugin_imports_no_engine():
    # pytest loads the plugin in every session of an environment with vdsofuzz installed.
    code = (
        "import sys, emu.pytest_plugin\n"
        "bad = [m for m in ('unicorn', 'capstone', 'hypothesis', 'emu.engine.executor') "
        "if m in sys.modules]\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
