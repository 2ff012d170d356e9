"""Host models from outside the package: a Python file or an installed entry point.

Two ways in, both without editing vdsofuzz:

- a file, `--host path/to/myhost.py:ClassName`: the file is imported under a module name
  made from its content's sha256 (so two processes importing the same file agree on the
  names of its classes, and pickles of its objects cross between them);
- an entry point of the group `vdsofuzz.hosts` in an installed distribution, e.g.
  `jitter = mypkg.hosts:Jitter`: the entry point's name is the host's name.

Every failure here is the user's to fix, so it is a `UserHostError` (a HostParamError: one
line, exit 2) naming the file or entry point and what to do. A host's own code that raises
while it runs is reported the same way (`guard`), not as a bug of vdsofuzz.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from host_model.base import HostModel, HostParamError, HostStep, HostView

GROUP = "vdsofuzz.hosts"
#: How a file host is named on the command line, in messages that say how to write one.
FORM = "path/to/file.py:ClassName"


class UserHostError(HostParamError):
    """A host model from a file or an entry point cannot be loaded, built or run."""


@dataclass(frozen=True)
class HostSource:
    """One host model `vdsofuzz hosts` lists: its name, where it comes from, its class
    (None when it cannot be loaded) and, then, why."""

    name: str
    origin: str
    cls: type[HostModel] | None
    error: str = ""


def is_file_spec(spec: str) -> bool:
    """`x.py:Class` or a bare `x.py`: a host given as a file (bundled and entry point names
    never end in `.py`)."""
    path, _, _ = spec.rpartition(":")
    return spec.endswith(".py") or path.endswith(".py")


def split_file_spec(spec: str) -> tuple[Path, str]:
    """`path.py:Class` -> (path, "Class"); a spec without the class says how to name it."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise UserHostError(f"host file {spec!r}: name the class too, as {FORM}")
    return Path(path), name


def canonical(spec: str) -> str:
    """The spec a scenario keeps: a file host with its absolute path (a worker process or a
    replay from another directory finds the same file); any other name unchanged."""
    if not isinstance(spec, str):
        raise UserHostError(f"a host is named by a string, not {spec!r}")
    if not is_file_spec(spec):
        return spec
    path, name = split_file_spec(spec)
    return f"{path.expanduser().resolve()}:{name}"


def short_name(spec: str) -> str:
    """A name fit for a file name: `myhost.JitterHost` for a file host, else the spec."""
    if not is_file_spec(spec):
        return spec
    path, name = split_file_spec(spec)
    return f"{path.stem}.{name}"


def _one_line(e: BaseException, path: Path | None = None) -> str:
    """`ValueError: bad thing (line 12)`: an exception as the one-line summary a user reads."""
    text = str(e).strip().splitlines()
    where = ""
    if isinstance(e, SyntaxError) and e.lineno:
        where = f" (line {e.lineno})"
        text = [e.msg]
    else:
        frames = traceback.extract_tb(e.__traceback__)
        if path is not None:
            lines = [f.lineno for f in frames if f.filename == str(path)]
            where = f" (line {lines[-1]})" if lines else ""
        else:
            # The deepest frame of the user's code, not of the import machinery.
            own = [f for f in frames if "importlib" not in f.filename and "<" not in f.filename]
            if own:
                where = f" ({Path(own[-1].filename).name} line {own[-1].lineno})"
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ") + where


#: Loaded files: resolved path -> (mtime_ns, size, sha256, module). A file is imported once
#: per version: every run of a campaign builds its host, and must not re-import it each time.
_FILES: dict[Path, tuple[int, int, str, ModuleType]] = {}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _import_file(path: Path) -> tuple[str, ModuleType]:
    """The module of the host file `path` (imported once per content) and its sha256."""
    try:
        st = path.stat()
        cached = _FILES.get(path)
        if cached and cached[:2] == (st.st_mtime_ns, st.st_size):
            return cached[2], cached[3]
        sha = file_sha256(path)
    except OSError as e:
        raise UserHostError(f"host file {path}: {e.strerror}; give an existing {FORM}") from None
    modname = f"vdsofuzz_host_{sha[:16]}"
    module = sys.modules.get(modname)
    if module is None:
        spec = importlib.util.spec_from_file_location(modname, path)
        assert spec is not None and spec.loader is not None  # a .py path always has a loader
        module = importlib.util.module_from_spec(spec)
        # In sys.modules before it runs: dataclasses and pickle look classes up there.
        sys.modules[modname] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[modname]
            raise UserHostError(
                f"host file {path}: importing it raised {_one_line(e, path)}; fix the file"
            ) from None
    _FILES[path] = (st.st_mtime_ns, st.st_size, sha, module)
    return sha, module


def check_class(cls: Any, where: str) -> type[HostModel]:
    """`cls` if it is a usable host model class; else an error naming `where` and the fix."""
    if not isinstance(cls, type) or not issubclass(cls, HostModel):
        what = cls.__name__ if isinstance(cls, type) else type(cls).__name__
        raise UserHostError(
            f"{where}: {what} is not a host model; subclass host_model.base.HostModel"
        )
    missing = [m for m in ("setup", "steps") if getattr(cls, m) is getattr(HostModel, m)]
    if missing:
        raise UserHostError(f"{where}: {cls.__name__} must define {' and '.join(missing)}()")
    return cls


def file_host(spec: str) -> type[HostModel]:
    """The class a `path.py:Class` spec names, imported and checked."""
    path, name = split_file_spec(spec)
    _, module = _import_file(path.expanduser().resolve())
    cls = getattr(module, name, None)
    if cls is None:
        defined = [k for k, _ in _defined(module)]
        raise UserHostError(
            f"host file {path}: no class {name!r} (host models defined there: "
            f"{', '.join(defined) or 'none'})"
        )
    return check_class(cls, f"host file {path}")


def _defined(module: ModuleType) -> list[tuple[str, type[HostModel]]]:
    """The host model classes `module` itself defines (not those it imports), by name."""
    return sorted(
        (k, v)
        for k, v in vars(module).items()
        if isinstance(v, type) and issubclass(v, HostModel) and v.__module__ == module.__name__
    )


def file_classes(path: Path) -> list[tuple[str, type[HostModel]]]:
    """Every usable host model class the file at `path` defines, by name."""
    _, module = _import_file(path.expanduser().resolve())
    found = _defined(module)
    if not found:
        raise UserHostError(f"host file {path}: defines no subclass of host_model.base.HostModel")
    return [(k, check_class(v, f"host file {path}")) for k, v in found]


def file_record(spec: str) -> dict[str, str] | None:
    """What a finding records of a file host to replay it: path, class, sha256 of the
    version that ran. None for a bundled or entry point host."""
    if not is_file_spec(spec):
        return None
    path, name = split_file_spec(spec)
    sha, _ = _import_file(path.expanduser().resolve())
    return {"path": str(path), "class": name, "sha256": sha}


def check_record(record: dict[str, Any], where: str) -> None:
    """Refuse to replay a finding whose host file is gone or is not the version recorded."""
    path = Path(str(record.get("path", "")))
    sha = str(record.get("sha256", ""))
    try:
        now = file_sha256(path)
    except OSError as e:
        raise UserHostError(
            f"{where}: recorded with host file {path}, which cannot be read ({e.strerror}); "
            "restore it there"
        ) from None
    if now != sha:
        raise UserHostError(
            f"{where}: host file {path} changed since it was recorded (sha256 {sha[:16]}, "
            f"now {now[:16]}); restore the recorded version, or fuzz again with this one"
        )


def entry_point_hosts() -> dict[str, EntryPoint]:
    """The group's entry points by name (the first one installed wins a duplicated name)."""
    out: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        out.setdefault(ep.name, ep)
    return out


def entry_point_origin(ep: EntryPoint) -> str:
    dist = ep.dist
    return f"entry point {dist.name} {dist.version}" if dist is not None else "entry point"


def entry_point_host(ep: EntryPoint) -> type[HostModel]:
    """The class entry point `ep` names, loaded and checked."""
    where = f"host {ep.name!r} ({entry_point_origin(ep)}, {ep.value})"
    try:
        cls = ep.load()
    except Exception as e:
        raise UserHostError(
            f"{where}: loading it raised {_one_line(e)}; fix or reinstall that package"
        ) from None
    return check_class(cls, where)


def build(cls: type[HostModel], where: str, params: dict[str, Any]) -> HostModel:
    """An instance of a user's host class, its errors (parameters included) named by where
    the class came from; its methods guarded so its own bugs are reported as its own."""
    try:
        host = cls(**params)
    except Exception as e:
        detail = str(e) if isinstance(e, HostParamError) else f"building it raised {_one_line(e)}"
        raise UserHostError(f"{where}: {detail}") from None
    return guard(host, where)


def guard(host: HostModel, where: str) -> HostModel:
    """`host` with setup, steps and tsc_offsets reporting an exception of its own code as a
    UserHostError naming `where` (a user's host bug is theirs to fix, not a bug of ours)."""
    setup, steps, offsets = host.setup, host.steps, host.tsc_offsets

    def fail(method: str, e: Exception) -> UserHostError:
        return UserHostError(f"{where}: {type(host).__name__}.{method} raised {_one_line(e)}")

    def guarded_setup(view: HostView) -> HostStep:
        try:
            return setup(view)
        except HostParamError:
            raise
        except Exception as e:
            raise fail("setup", e) from e

    def guarded_steps(view: HostView) -> Iterator[HostStep]:
        try:
            yield from steps(view)
        except HostParamError:
            raise
        except Exception as e:
            raise fail("steps", e) from e

    def guarded_offsets(vcpus: int) -> tuple[int, ...]:
        try:
            return offsets(vcpus)
        except Exception as e:
            raise fail("tsc_offsets", e) from e

    # Instance attributes shadow the class's methods for this one host only.
    host.__dict__.update(setup=guarded_setup, steps=guarded_steps, tsc_offsets=guarded_offsets)
    return host
