"""Host models from outside the package: a file (`path.py:Class`), an installed entry point,
the README's example, their errors, and a worker process that imports the file again."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import re
import shutil
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from emu.cli import main
from emu.engine.scenario import Scenario
from host_model.base import HostParamError
from host_model.registry import _ENTRY_POINTS, make_host

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "myhost.py"

#: A minimal host file: the README's example imports, one seqlock republish of vCPU 0.
HEADER = """\
from host_model.base import HostModel, Param
from host_model.writer import initial_writes, republish, snapshot
"""
GOOD = """
class Good(HostModel):
    name = "good"
    summary = "one correct republish of vCPU 0"
    params = (Param("updates", 1, "updates", low=0, high=3),)

    def setup(self, view):
        self.pvti = [snapshot(view.clock, v, view.t, version=2) for v in range(view.vcpus)]
        return initial_writes(self.pvti)

    def steps(self, view):
        for _ in range(self.updates):
            yield from republish(self.pvti, 0, view)
"""


def _write(tmp_path: Path, body: str, name: str = "h.py") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def _fuzz(tmp_path: Path, host: str, *extra: str) -> int:
    out = tmp_path / "out"
    return main(["fuzz", "--out", str(out), "--no-trace", "--no-db", "--host", host, *extra])


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# --- the README's example -----------------------------------------------------------------


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Your own host model")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_readme_shows_the_example_file_verbatim():
    blocks = re.findall(r"```python\n(.*?)```", _readme_section(), re.S)
    assert blocks, "the README section shows the example file"
    assert blocks[0] == EXAMPLE.read_text()


def test_readme_example_finds_what_the_readme_says(tmp_path, capsys, monkeypatch):
    """The README runs the example from the repository root; so does this test."""
    monkeypatch.chdir(ROOT)
    section = _readme_section()
    command = "vdsofuzz fuzz --host examples/myhost.py:JitterHost"
    assert command in section and "VIOLATION of monotonic" in section
    out = tmp_path / "out"
    argv = ["fuzz", "--host", "examples/myhost.py:JitterHost", "--out", str(out), "--json"]
    assert main(argv) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["oracle"] == "monotonic"
    assert f"minimal schedule: {found['schedule']}" in section
    exact = " --param jitter_ns=0 --strategy exhaustive --preemptions 2"
    assert command + exact in section and "none violates" in section
    assert main([*argv, *exact.split()]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "pass"


# --- a file host: the finding records it, replay checks it ----------------------------------


def test_file_host_finding_records_path_class_and_sha256_and_replays(tmp_path, capsys):
    host = shutil.copy(EXAMPLE, tmp_path / "mine.py")
    assert _fuzz(tmp_path, f"{host}:JitterHost", "--json") == 1
    finding = Path(json.loads(capsys.readouterr().out)["finding"])
    assert finding.name.startswith("finding-mine.JitterHost-")
    data = json.loads(finding.read_text())
    assert data["scenario"]["host"] == f"{Path(host).resolve()}:JitterHost"
    assert data["host_file"]["class"] == "JitterHost"
    import hashlib

    assert data["host_file"]["sha256"] == hashlib.sha256(Path(host).read_bytes()).hexdigest()
    assert main(["replay", str(finding), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["reproduced"] is True

    Path(host).write_text(Path(host).read_text() + "# edited\n")
    assert main(["replay", str(finding)]) == 2
    assert "changed since it was recorded" in _one_line_error(capsys)
    Path(host).unlink()
    assert main(["trace", str(finding)]) == 2
    assert "which cannot be read (No such file or directory)" in _one_line_error(capsys)


def test_same_seed_same_finding_file_with_a_file_host(tmp_path, capsys):
    host = shutil.copy(EXAMPLE, tmp_path / "d.py")
    saved = []
    for run in ("a", "b"):
        argv = ["fuzz", "--host", f"{host}:JitterHost", "--strategy", "random", "--seed", "7"]
        assert main([*argv, "--out", str(tmp_path / run), "--no-trace", "--json"]) == 1
        saved.append(Path(json.loads(capsys.readouterr().out)["finding"]).read_bytes())
    assert saved[0] == saved[1]


def test_relative_path_is_kept_absolute_in_the_scenario(tmp_path, monkeypatch):
    _write(tmp_path, GOOD)
    monkeypatch.chdir(tmp_path)
    sc = Scenario(image="modern", host="h.py:Good")
    assert sc.host == f"{tmp_path.resolve() / 'h.py'}:Good"
    again = pickle.loads(pickle.dumps(sc))
    assert isinstance(again.host, str) and again.host == sc.host


def test_a_spawned_worker_imports_the_file_host_again(tmp_path):
    """A process pool worker gets the scenario pickled (a plain string for the host) and
    reaches the same verdict on the same schedules as this process."""
    from emu.search.catalog import run_entry
    from emu.search.entry import Entry

    host = shutil.copy(EXAMPLE, tmp_path / "w.py")
    sc = Scenario(image="modern", host=f"{host}:JitterHost")
    entry = Entry("w", sc, "violation", strategies=("random",), max_schedules=200)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        remote = pool.submit(run_entry, entry, None).result()
    here = run_entry(entry, None)
    assert remote.verdict == "violation"
    assert (remote.oracle, remote.schedule, remote.schedules) == (
        here.oracle,
        here.schedule,
        here.schedules,
    )


# --- bad input: one line naming the file, exit 2 -------------------------------------------

BAD = {
    "missing file": (None, "Good", "No such file"),
    "import fails": ("raise RuntimeError('no config here')\n", "Good", "RuntimeError: no config"),
    "syntax error": ("def broken(:\n", "Good", "SyntaxError"),
    "no such class": (GOOD, "Nope", "no class 'Nope' (host models defined there: Good)"),
    "not a host model": ("class Plain:\n    pass\n", "Plain", "subclass host_model.base"),
    "no steps": (
        "class Half(HostModel):\n    def setup(self, view):\n        return None\n",
        "Half",
        "must define steps()",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_host_file_is_one_line_naming_the_file(tmp_path, capsys, case):
    body, cls, says = BAD[case]
    path = tmp_path / "nothere.py" if body is None else _write(tmp_path, body)
    assert _fuzz(tmp_path, f"{path}:{cls}") == 2
    err = _one_line_error(capsys)
    assert str(path) in err and says in err


def test_a_directory_is_not_a_host_file(tmp_path, capsys):
    (tmp_path / "d.py").mkdir()
    assert _fuzz(tmp_path, f"{tmp_path / 'd.py'}:X") == 2
    assert "Is a directory" in _one_line_error(capsys)


def test_import_error_names_the_line(tmp_path, capsys):
    path = _write(tmp_path, "x = 1\nraise ValueError('bad')\n")
    assert _fuzz(tmp_path, f"{path}:X") == 2
    assert "ValueError: bad (line 4)" in _one_line_error(capsys)


def test_a_file_without_a_class_says_how_to_name_it(tmp_path, capsys):
    path = _write(tmp_path, GOOD)
    assert _fuzz(tmp_path, str(path)) == 2
    assert "path/to/file.py:ClassName" in _one_line_error(capsys)


@pytest.mark.parametrize(
    ("param", "says"),
    [("updates=9", "updates=9 is out of range: 0..3"), ("speed=2", "no parameter 'speed'")],
)
def test_bad_params_of_a_file_host_name_the_file(tmp_path, capsys, param, says):
    path = _write(tmp_path, GOOD)
    assert _fuzz(tmp_path, f"{path}:Good", "--param", param) == 2
    err = _one_line_error(capsys)
    assert f"host file {path}" in err and says in err


def test_host_code_that_raises_while_running_is_the_users_error(tmp_path, capsys):
    """Not exit 70 (a bug of ours): the file, the method and the exception."""
    body = GOOD.replace("yield from republish(self.pvti, 0, view)", "yield 1 // 0")
    path = _write(tmp_path, body)
    assert _fuzz(tmp_path, f"{path}:Good") == 2
    err = _one_line_error(capsys)
    assert str(path) in err and "Good.steps raised ZeroDivisionError" in err


def test_make_host_builds_a_file_host_and_imports_it_once(tmp_path):
    path = _write(tmp_path, GOOD)
    a, b = make_host(f"{path}:Good"), make_host(f"{path}:Good", {"updates": 2})
    assert type(a) is type(b) and b.values == {"updates": 2}
    with pytest.raises(HostParamError, match="unknown host model 'nope'"):
        make_host("nope")


# --- entry points ---------------------------------------------------------------------------


def _distribution(site: Path, dist: str, package: str, entry_points: str) -> None:
    """A real installed distribution as an installer leaves it: a package and a dist-info
    directory with METADATA and entry_points.txt."""
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(HEADER + GOOD)
    info = site / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[vdsofuzz.hosts]\n{entry_points}")


@pytest.fixture
def installed(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _distribution(
        site,
        "acme-hosts",
        "acme_hosts",
        "acme-good = acme_hosts:Good\n"
        "acme-broken = acme_hosts.gone:Nothing\n"
        "acme-plain = acme_hosts:Param\n"
        "kvm = acme_hosts:Good\n",
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in ("acme-good", "acme-broken", "acme-plain"):
        _ENTRY_POINTS.pop(name, None)


def test_readme_packaging_makes_the_example_an_entry_point_host(tmp_path, monkeypatch, capsys):
    """The README's pyproject, installed as an installer would (its module and a dist-info
    with the entry points it declares), makes `--host jitter` the example's model."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the pyproject's tomli dependency on 3.10
        import tomli as tomllib

    block = re.findall(r"```toml\n(.*?)```", _readme_section(), re.S)[0]
    project = tomllib.loads(block)
    (module,) = project["tool"]["setuptools"]["py-modules"]
    eps = project["project"]["entry-points"]["vdsofuzz.hosts"]
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(EXAMPLE, site / f"{module}.py")
    name, version = project["project"]["name"], project["project"]["version"]
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{k} = {v}\n" for k, v in eps.items())
    (info / "entry_points.txt").write_text(f"[vdsofuzz.hosts]\n{lines}")
    monkeypatch.syspath_prepend(str(site))
    try:
        assert main(["hosts"]) == 0
        assert f"jitter                 entry point {name} {version}: seqlock" in (
            capsys.readouterr().out
        )
        assert _fuzz(tmp_path, "jitter", "--json") == 1
        assert json.loads(capsys.readouterr().out)["oracle"] == "monotonic"
    finally:
        _ENTRY_POINTS.pop("jitter", None)


def test_hosts_lists_every_host_with_its_origin(installed, capsys):
    assert main(["hosts", str(EXAMPLE)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln for ln in lines if not ln.startswith(" ")}
    assert "bundled:" in rows["kvm-legacy-copy"]
    assert "entry point acme-hosts 0.3: one correct republish" in rows["acme-good"]
    assert "BROKEN" in rows["acme-broken"] and "ModuleNotFoundError" in rows["acme-broken"]
    assert "BROKEN" in rows["acme-plain"] and "not a host model" in rows["acme-plain"]
    assert any("entry point acme-hosts 0.3: BROKEN, shadowed" in ln for ln in lines)
    assert f"file {EXAMPLE}: seqlock updates" in rows[f"{EXAMPLE}:JitterHost"]


def test_an_entry_point_host_runs_and_a_broken_one_errs_only_when_used(installed, tmp_path, capsys):
    assert _fuzz(tmp_path, "acme-good", "--max-schedules", "50") == 0
    capsys.readouterr()
    assert _fuzz(tmp_path, "acme-broken") == 2
    err = _one_line_error(capsys)
    assert "'acme-broken' (entry point acme-hosts 0.3, acme_hosts.gone:Nothing)" in err
    assert "ModuleNotFoundError" in err and "reinstall" in err


def test_disasm_takes_a_user_host_without_an_updates_parameter(tmp_path, capsys):
    """`disasm --host` runs one quiescent read; a user's host need not have `updates`."""
    host = tmp_path / "still.py"
    host.write_text(
        textwrap.dedent(
            """
            from host_model.base import HostModel
            from host_model.writer import initial_writes, snapshot


            class Still(HostModel):
                name = "still"

                def setup(self, view):
                    self.pvti = [snapshot(view.clock, v, 0, version=2) for v in range(view.vcpus)]
                    return initial_writes(self.pvti)

                def steps(self, view):
                    return iter(())
            """
        )
    )
    assert main(["disasm", "modern", "--host", f"{host}:Still"]) == 0
    assert "vcpu0.version" in capsys.readouterr().out
