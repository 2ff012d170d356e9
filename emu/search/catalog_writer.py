"""`vdsofuzz check --writer W`: the catalog's reference scenarios with a compiled host writer
storing the host's updates, each expected to get the verdict the Python model gets.

Only the scenarios whose host model stores its records with the correct seqlock protocol
are taken (`kvm`, `xen`, the master-clock, migration and unsynchronised-TSC models): the
writer replaces that protocol, so a correct writer must reach the same verdicts, and a
writer that breaks the protocol differs where a reader could see it. Scenarios of the
legacy copy, of Hyper-V's page and those that already name a writer are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from emu.search.catalog_file import CatalogError
from emu.search.entry import Entry
from host_model.registry import make_host
from host_model.writer import SEQLOCK


def _seqlock_host(entry: Entry) -> bool:
    host = make_host(entry.scenario.host, entry.scenario.host_params)
    return "pvclock" in host.pages and getattr(host, "protocol", SEQLOCK) is SEQLOCK


def for_writer(entries: Iterable[Entry], writer: str) -> list[Entry]:
    """The reference seqlock-host entries with `writer` storing the updates."""
    out = [
        replace(e, name=f"{e.name}+writer", scenario=replace(e.scenario, writer=writer))
        for e in entries
        if e.reference and not e.scenario.writer and _seqlock_host(e)
    ]
    if not out:
        raise CatalogError("the catalog has no reference scenarios of a seqlock host")
    return out
