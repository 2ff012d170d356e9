"""Every bundled host model by name; `make_host` builds one from CLI-style parameters."""

from __future__ import annotations

from typing import Any

from host_model.base import HostModel, HostParamError
from host_model.hyperv import HyperV
from host_model.kvm import Kvm
from host_model.kvm_legacy import KvmLegacyCopy
from host_model.masterclock import KvmMasterclock
from host_model.migration import KvmMigration, KvmMigrationParked
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


def make_host(name: str, params: dict[str, Any] | None = None) -> HostModel:
    """The host model called `name` with `params`; a HostParamError names what is wrong."""
    try:
        cls = HOSTS[name]
    except KeyError:
        raise HostParamError(
            f"unknown host model {name!r}; `vdsofuzz hosts` lists them: {', '.join(sorted(HOSTS))}"
        ) from None
    return cls(**(params or {}))
