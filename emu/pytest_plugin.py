"""The pytest plugin (entry point `pytest11: vdsofuzz`): regression-test a vDSO image in CI.

`pytest --vdso-image build/arch/x86/entry/vdso/vdso64.so.dbg` collects the catalog's host
matrix for that image (what `vdsofuzz check --image` runs) as one test item per scenario,
named after it (`vdso64.so.dbg::kvm-legacy-copy`); each item expects what the reference
reader gets on that host. A failing item shows the `explain` summary of its finding, where
the finding was saved and the commands that replay and draw it; `--junitxml` gives JUnit.

The `vdsofuzz` fixture is `emu.api` with this session's image as the default image and a
per-test directory for findings, plus `assert_no_violation`, so a property of one's own
host parameters takes a few lines.

Nothing here imports the engine until a vdsofuzz item or the fixture runs: every pytest
session of an environment with vdsofuzz installed loads this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from emu.search.entry import Entry, Result
    from emu.search.fuzz import Outcome
    from emu.search.schedule import Finding

#: Where findings go unless --vdso-out says otherwise (relative to the invocation directory).
DEFAULT_OUT = Path("vdsofuzz-out") / "pytest"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vdsofuzz", "vdsofuzz: test a vDSO image against host models")
    group.addoption(
        "--vdso-image",
        action="append",
        default=[],
        metavar="PATH",
        help="collect the catalog's host scenarios for this reader image (repeatable): a "
        "vdso64.so/vdso32.so (with symbols), a `vdsofuzz dump-vdso` directory or a bundled name",
    )
    group.addoption(
        "--vdso-out", type=Path, default=DEFAULT_OUT, metavar="DIR", help="where findings go"
    )
    group.addoption(
        "--vdso-schedules",
        type=int,
        default=None,
        metavar="N",
        help="cap each scenario's search at N schedules per strategy (default: the catalog's)",
    )
    group.addoption(
        "--vdso-witnesses",
        action="store_true",
        help="also re-prove that each pass scenario catches its seeded-bug readers (this "
        "tests the catalog, not the image; `vdsofuzz check` does it)",
    )


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


class ImageScenarios(pytest.Collector):
    """The catalog's host scenarios for one image, one item each."""

    def __init__(self, *, entries: list[Entry], out: Path, **kw: Any) -> None:
        super().__init__(**kw)
        self.entries = entries
        self.out = out

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        return [
            ScenarioItem.from_parent(self, name=e.name.split("/", 1)[-1], entry=e, out=self.out)
            for e in self.entries
        ]


def _entries(config: pytest.Config, image: str) -> list[Entry]:
    """The scenarios of `image`; bad input (an unreadable image, a reader of neither
    clock page) stops the session with one line."""
    from emu import api
    from emu.errors import BAD_INPUT

    schedules = config.getoption("vdso_schedules")
    if schedules is not None and schedules < 1:
        raise pytest.UsageError(f"--vdso-schedules {schedules}: must be 1 or more")
    try:
        return api.entries(
            image, witnesses=config.getoption("vdso_witnesses"), max_schedules=schedules
        )
    except BAD_INPUT as e:
        raise pytest.UsageError(f"--vdso-image {image}: {e}") from None


class ScenarioFailed(Exception):
    """An item's scenario did not get the verdict the reference reader gets."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ScenarioItem(pytest.Item):
    """One catalog scenario with the image substituted: expects the reference verdict."""

    def __init__(self, *, entry: Entry, out: Path, **kw: Any) -> None:
        super().__init__(**kw)
        self.entry = entry
        self.out = out

    def runtest(self) -> None:
        from emu.search.catalog import run_entry

        self.out.mkdir(parents=True, exist_ok=True)
        result = run_entry(self.entry, self.out)
        self.user_properties.append(("got", result.got))
        if result.finding:
            self.user_properties.append(("finding", result.finding))
        if not result.ok:
            raise ScenarioFailed(failure_text(self.entry, result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ScenarioFailed):
            return excinfo.value.text
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path | str, int | None, str]:
        return self.entry.scenario.image, None, self.nodeid


def failure_text(entry: Entry, result: Result) -> str:
    """What a failed item shows: expected and got, the explanation, the finding, the
    commands that replay and draw it."""
    where = f"host {result.host}" + (f" with {result.options}" if result.options != "-" else "")
    lines = [
        f"{entry.name} on {where}: expected {result.expected}, got {result.got} in "
        f"{result.schedules} schedules",
    ]
    if entry.why:
        lines.append(f"the reference reader: {entry.why}")
    if result.finding:
        lines += ["", explanation(Path(result.finding)).rstrip("\n"), ""]
        lines += finding_lines(Path(result.finding))
    elif result.message:
        lines.append(result.message)
    return "\n".join(lines)


def explanation(path: Path) -> str:
    """The `vdsofuzz explain` summary of a saved finding."""
    from emu import api

    return api.explain(path).text()


def finding_lines(path: Path) -> list[str]:
    return [
        f"finding: {path}",
        f"replay:  vdsofuzz replay {path}",
        f"explain: vdsofuzz explain {path}",
        f"trace:   vdsofuzz trace {path} --svg {path.with_suffix('.svg')}",
    ]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Add the items of every --vdso-image (first, so -k and -m select among them too),
    reported like any collected items."""
    from _pytest.runner import collect_one_node

    root = Path(config.getoption("vdso_out"))
    for image in config.getoption("vdso_image"):
        out = root / _slug(Path(image).name)
        node = ImageScenarios.from_parent(
            session, name=image, nodeid=image, entries=_entries(config, image), out=out
        )
        report = collect_one_node(node)
        session.ihook.pytest_collectreport(report=report)
        for item in report.result:
            if isinstance(item, pytest.Item):
                session.ihook.pytest_itemcollected(item=item)
                items.append(item)


class Vdsofuzz:
    """The `vdsofuzz` fixture: `emu.api` with the session's first --vdso-image as the
    default image and this test's own directory for findings."""

    def __init__(self, image: str | None, out: Path) -> None:
        #: The image `fuzz` and `check` use when not given one (the first --vdso-image).
        self.image = image
        self.out = out

    def _image(self, image: str | Path | None) -> str | Path:
        chosen = image if image is not None else self.image
        if chosen is None:
            raise pytest.UsageError("the vdsofuzz fixture needs --vdso-image PATH or image=")
        return chosen

    def fuzz(self, host: str = "kvm", *, image: str | Path | None = None, **kw: Any) -> Outcome:
        """`emu.api.fuzz` on the image; the finding (if any) is saved under `self.out`."""
        from emu import api

        kw.setdefault("out", self.out)
        return api.fuzz(self._image(image), host, **kw)

    def check(self, image: str | Path | None = None, **kw: Any) -> list[Result]:
        from emu import api

        kw.setdefault("out", self.out)
        return api.check(self._image(image), **kw)

    def assert_no_violation(self, outcome: Outcome) -> None:
        """Fail the test with the explanation and the finding's commands if `outcome`
        found a violation."""
        f: Finding | None = outcome.finding
        if f is None:
            return
        from emu import api

        path = outcome.path or f.save(self.out / "finding.json")
        text = [f"VIOLATION of {f.oracle}: {f.message}", "", api.explain(f).text().rstrip()]
        pytest.fail("\n".join(text + [""] + finding_lines(path)), pytrace=False)

    def __getattr__(self, name: str) -> Any:
        """replay, trace, explain, load, scenario, entries: straight from emu.api."""
        from emu import api

        if name in api.__all__:
            return getattr(api, name)
        raise AttributeError(name)


@pytest.fixture
def vdsofuzz(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Vdsofuzz]:
    images = request.config.getoption("vdso_image")
    yield Vdsofuzz(images[0] if images else None, tmp_path / "vdsofuzz")
