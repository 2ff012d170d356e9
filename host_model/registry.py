"""Every host model by name; `make_host` builds one from CLI-style parameters.

A host spec is a bundled model's name (`kvm`), the name of an entry point of the
`vdsofuzz.hosts` group, or a file, `path/to/myhost.py:ClassName` (host_model.plugins loads
the last two). Bundled names win over an entry point of the same name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from host_model import plugins
from host_model.base import HostModel, HostParamError
from host_model.hyperv import HyperV
from host_model.kvm import Kvm
from host_model.kvm_legacy import KvmLegacyCopy
from host_model.masterclock import KvmMasterclock
from host_model.migration import KvmMigration, KvmMigrationParked
from host_model.plugins import (
    HostSource,
    UserHostError,
    entry_point_host,
    entry_point_hosts,
    entry_point_origin,
    file_host,
    is_file_spec,
)
from host_model.unsynced import UnsyncedTsc
from host_model.xen import Xen

HOSTS: dict[str, type[HostModel]] = {
    cls.name: cls
    for cls in (
        Kvm,
        KvmLegacyCopy,
        KvmMasterclock,
        KvmMigration,
        KvmMigrationParked,
        Xen,
        UnsyncedTsc,
        HyperV,
    )
}

#: Entry point hosts already loaded: name -> (class, origin).
_ENTRY_POINTS: dict[str, tuple[type[HostModel], str]] = {}


def host_class(spec: str) -> tuple[type[HostModel], str]:
    """The class `spec` names and where it comes from ("" for a bundled host)."""
    if spec in HOSTS:
        return HOSTS[spec], ""
    if is_file_spec(spec):
        return file_host(spec), f"host file {plugins.split_file_spec(spec)[0]}"
    if spec in _ENTRY_POINTS:
        return _ENTRY_POINTS[spec]
    ep = entry_point_hosts().get(spec)
    if ep is None:
        raise HostParamError(
            f"unknown host model {spec!r}; `vdsofuzz hosts` lists them "
            f"({', '.join(sorted(HOSTS))}, and any installed), or give a file as "
            f"{plugins.FORM}"
        )
    # Every run builds its host: look the installed distributions up once per name.
    _ENTRY_POINTS[spec] = entry_point_host(ep), f"host {spec!r} ({entry_point_origin(ep)})"
    return _ENTRY_POINTS[spec]


def make_host(spec: str, params: dict[str, Any] | None = None) -> HostModel:
    """The host model `spec` names, with `params`; a HostParamError names what is wrong."""
    cls, where = host_class(spec)
    if not where:
        return cls(**(params or {}))
    return plugins.build(cls, where, params or {})


def canonical_host(spec: str) -> str:
    """The spec a scenario records (a file host by its absolute path)."""
    return plugins.canonical(spec)


def host_label(spec: str) -> str:
    """The host's name in a file name (`myhost.JitterHost` for a file host)."""
    return plugins.short_name(spec)


def all_hosts() -> list[HostSource]:
    """Every host model `vdsofuzz hosts` lists: the bundled ones, then the entry points
    (one that cannot be loaded is listed with why; one a bundled name shadows, too)."""
    out = [HostSource(name, "bundled", cls) for name, cls in sorted(HOSTS.items())]
    for name, ep in sorted(entry_point_hosts().items()):
        origin = entry_point_origin(ep)
        if name in HOSTS:
            out.append(HostSource(name, origin, None, "shadowed by the bundled host of that name"))
            continue
        try:
            out.append(HostSource(name, origin, entry_point_host(ep)))
        except UserHostError as e:
            out.append(HostSource(name, origin, None, str(e)))
    return out


def file_hosts(spec: str) -> list[HostSource]:
    """The host models of a file (`x.py`: every one it defines; `x.py:Class`: that one),
    each named as `--host` takes it. An unusable file is an error, as it would be in a run."""
    if not spec.endswith(".py"):
        return [HostSource(spec, f"file {plugins.split_file_spec(spec)[0]}", file_host(spec))]
    path = Path(spec)
    return [
        HostSource(f"{path}:{name}", f"file {path}", cls)
        for name, cls in plugins.file_classes(path)
    ]
