"""A finding's signature: what identifies one bug across schedules and seeds.

Definition (the README's campaign section says the same). Take the run of the shrunk
finding and the reads its violation names. For every load instruction of those reads keep
its *last* load (the value the read went on with), and the host step that value came from
(`emu.engine.readsfrom`: the latest store among its bytes, or boot). If these values came
from different host steps, the *sites* are those load instructions, each named
`symbol+offset field` (the field with vCPU numbers replaced by `N`), and the *steps* are the
kinds (`step_kind`) of the host steps after the oldest value's store up to and including
the newest value's store: what came between them. If every value came from one host step
(a stale but whole record, two reads that disagree), there are no sites, and the steps are
the kinds of the host steps after that one up to the end of the reads.

Where exactly the host's update fell among the loads (which of them got the old values) is
left out on purpose: a reader that does not retry is torn at whichever load the schedule
preempts, and each place would otherwise be a signature of its own. So are schedule
positions, times, vCPU numbers and store indices: they change with the seed, the bug does
not. The signature is (oracle, image name, sites, steps); its id is the first 12 hex digits
of the sha256 of its canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emu.engine.executor import Executor
from emu.engine.readsfrom import BOOT, LoadSource, reads_from
from emu.engine.run import Run
from host_model.base import HostStep

#: vCPU numbers in field names (`vcpu1.system_time`, `pvti0`) vary with the schedule.
_VCPU = re.compile(r"(vcpu|pvti)\d+")
#: Fields of a seqlock's counter, in the page families the engine knows.
_COUNTERS = ("version", "seq", "sequence")


def _field(name: str) -> str:
    return _VCPU.sub(r"\1N", name)


def step_kind(step: HostStep) -> str:
    """The kind of a host step: what it does, not to which vCPU or value.

    `write-counter` (it stores a seqlock counter: version, seq, sequence), `write-body`
    (it stores other record fields), `publish` (a record becomes current with no store),
    `park`, `unpark`, `tsc` (a TSC jump or frequency change); several joined by `+`."""
    parts = []
    if step.writes:
        counter = any(
            _field(w.label).split(".")[-1].split(" ")[0] in _COUNTERS for w in step.writes
        )
        parts.append("write-counter" if counter else "write-body")
    elif step.publish:
        parts.append("publish")
    if step.park:
        parts.append("park")
    if step.unpark:
        parts.append("unpark")
    if step.tsc:
        parts.append("tsc")
    return "+".join(parts) or "none"


@dataclass(frozen=True)
class Signature:
    oracle: str
    image: str
    #: The load sites whose values came from different host steps: `symbol+offset field`.
    sites: tuple[str, ...]
    #: Kinds of the host steps between the oldest value and the newest one, sorted.
    steps: tuple[str, ...]

    @property
    def id(self) -> str:
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        return {
            "oracle": self.oracle,
            "image": self.image,
            "sites": list(self.sites),
            "steps": list(self.steps),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Signature:
        return cls(str(d["oracle"]), str(d["image"]), tuple(d["sites"]), tuple(d["steps"]))

    def describe(self) -> str:
        """`consistent: read+0x29 vcpuN.system_time, ... <- write-body`."""
        sites = ", ".join(self.sites) or "every load from one store"
        return f"{self.oracle}: {sites} <- {'+'.join(self.steps) or 'no host step'}"


def _site(executor: Executor, src: LoadSource) -> str:
    where = executor.image.symbolize(src.pc - executor.machine.layout.base)
    return f"{where} {_field(src.field)}"


def signature(
    run: Run, oracle: str, reads: Sequence[str], executor: Executor, image: str
) -> Signature:
    """The signature of `run`'s violation of `oracle` in `reads` (see the module doc)."""
    names = set(reads)
    spec = executor.image.vdso_data
    sources = reads_from(run, executor.machine.layout, executor.sites.widths, spec)
    last: dict[tuple[str, int], LoadSource] = {}
    for s in sources:
        if s.read in names:
            last[(s.read, s.pc)] = s  # sources are in execution order: the last one stays
    used = list(last.values())
    if len({s.source for s in used}) <= 1:
        source = used[0].source if used else BOOT
        return Signature(oracle, image, (), _since(run, source, reads))
    oldest = min(s.source for s in used)
    newest = max(s.source for s in used)
    sites = tuple(sorted({_site(executor, s) for s in used}))
    kinds = {step_kind(e.step) for e in run.host[oldest + 1 : newest + 1]}
    return Signature(oracle, image, sites, tuple(sorted(kinds)))


def _since(run: Run, source: int, reads: Sequence[str]) -> tuple[str, ...]:
    """Kinds of the host steps after step `source` (BOOT: from the start) that ran before
    the reads `reads` ended: what made a whole record wrong by the time it was used."""
    end = max((r.end for r in run.reads if r.label in set(reads)), default=-1)
    return tuple(sorted({step_kind(e.step) for e in run.host[source + 1 :] if e.t <= end}))
