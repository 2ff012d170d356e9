"""Every bundled host model by name; `make_host` builds one from CLI-style parameters."""

from __future__ import annotations

from typing import Any

from host_model.base import HostModel
from host_model.kvm import Kvm

HOSTS: dict[str, type[HostModel]] = {cls.name: cls for cls in (Kvm,)}


def make_host(name: str, params: dict[str, Any] | None = None) -> HostModel:
    try:
        cls = HOSTS[name]
    except KeyError:
        raise ValueError(
            f"unknown host model {name!r}; `vdsofuzz hosts` lists them: {', '.join(sorted(HOSTS))}"
        ) from None
    return cls(**(params or {}))
