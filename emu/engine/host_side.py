"""The host side of a run: the host model's generator, its steps and the parked vCPUs.

`HostSide` boots the shared pages from the host's setup step, takes the host's steps when
the decisions give it its turn, and applies each step's effects: page writes, published
records, TSC retunes, parking and resuming vCPUs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from itertools import chain
from typing import Any

from emu.engine.decisions import Decider
from emu.engine.machine import Machine
from emu.engine.run import HostEvent
from emu.engine.state import State
from emu.engine.writer_steps import CompiledWriter
from host_model.base import HostModel, HostStep
from host_model.clock import Clock
from host_model.vdso_data import timekeeping, with_vdso_data

_NONE: frozenset[int] = frozenset()
#: Boot steps whose page image is kept (hosts whose boot differs per run: bounded).
_BOOT_IMAGES = 16


class HostSide:
    """The host agent of one executor's machine."""

    def __init__(self, machine: Machine, decider: Decider, writer: str = "") -> None:
        """`writer`: a compiled host writer (`--writer`) that stores the host's pvti updates."""
        self.machine = machine
        self.decider = decider
        self.writer = CompiledWriter(writer, machine.layout) if writer else None
        #: Boot steps seen (kept alive, so their ids stay theirs) -> the page image they give.
        self._images: dict[int, tuple[HostStep, tuple[bytes, HostStep]]] = {}

    def clock(self, host: HostModel, seed: Any) -> Clock:
        """The clock of a run against `host`; `seed`: the image's clock seed (real vDSOs:
        the TSC rate, boot time and TSC base the guest kernel's `vdso_data` was made with)."""
        vcpus = self.decider.vcpus
        if seed is None:
            return Clock(vcpus, offsets=host.tsc_offsets(vcpus))
        return Clock(
            vcpus, seed.tsc_hz, seed.boot_ns, host.tsc_offsets(vcpus), tsc_base=seed.tsc_base
        )

    def boot(self, st: State, vdso_data: Any, kernel_updates: int) -> None:
        """Reset the machine's pages to the host's setup and start its steps.
        `vdso_data`: the image's vdso_data spec (real vDSOs), whose guest timekeeping makes
        `kernel_updates` updates before the host model's own steps."""
        view = st.view
        view.writer = self.writer.bind() if self.writer is not None else None
        setup = with_vdso_data(st.host.setup(view), vdso_data, st.clock.boot_ns)
        pages, effects = self._boot_image(setup)
        self.machine.reset(pages)
        self.apply(st, effects, -1)
        steps: Iterator[HostStep] = st.host.steps(view)
        if kernel_updates:
            steps = chain(timekeeping(vdso_data, view, kernel_updates), steps)
        st.host_iter = steps
        st.host_next = next(steps, None)

    def step(self, st: State) -> None:
        """Take the host's next step (it has one: the decisions offer it only then)."""
        step = st.host_next
        assert step is not None
        t = st.t
        st.t += 1
        unchanged = self.apply(st, step, t)
        view = st.view
        view.t = st.t
        # The next step is computed now, at the time just after this one: whether that
        # reads the time is this event's `plans`.
        view.read_t = False
        st.host_next = next(st.host_iter, None)
        event = HostEvent(t, step, view.read_t, unchanged)
        st.run.host.append(event)
        if st.observer:
            st.observer("host", event)
        if st.host_next is None:
            self.decider.refresh(st)

    def apply(self, st: State, step: HostStep, t: int) -> frozenset[int]:
        """The effects of host `step` taken at logical time `t`; the indices of its
        writes that stored the bytes already there."""
        m = self.machine
        pages = m.layout.pages
        unchanged = _NONE
        for k, w in enumerate(step.writes):
            if not m.write(pages[w.page] + w.offset, w.data):
                unchanged |= {k}
        for p in step.publish:
            st.run.history.setdefault(p.key, []).append((t, p.snapshot))
        for c in step.tsc:
            st.clock.retune(c.vcpu, max(t, 0), hz=c.hz, jump=c.jump)
        if step.park or step.unpark:
            for v in step.park:
                st.parked_since.setdefault(v, t)
            for task in st.tasks:
                if task.vcpu in step.unpark:
                    # VM exit and entry serialise the vCPU: no rdtsc is taken from before.
                    task.spec_from, task.spec_loads = t + 1, 0
            for v in step.unpark:
                if v in st.parked_since:
                    st.run.parked.append((st.parked_since.pop(v), t, frozenset({v})))
            st.parked = (st.parked | step.park) - step.unpark
            self.decider.refresh(st)
        return unchanged

    def finish(self, st: State) -> None:
        """Close the intervals of vCPUs still parked when the run ends."""
        for v, since in st.parked_since.items():
            st.run.parked.append((since, st.t, frozenset({v})))

    def _boot_image(self, step: HostStep) -> tuple[bytes, HostStep]:
        """The shared pages as bytes after the boot `step`'s writes (for one memory write),
        and the step without its writes (for its records and other effects)."""
        hit = self._images.get(id(step))
        if hit is not None and hit[0] is step:
            return hit[1]
        boot = (self._page_image(step), replace(step, writes=()))
        if len(self._images) >= _BOOT_IMAGES:
            self._images.clear()
        self._images[id(step)] = (step, boot)
        return boot

    def _page_image(self, step: HostStep) -> bytes:
        lo, hi = self.machine.layout.shared
        buf = bytearray(hi - lo)
        pages = self.machine.layout.pages
        for w in step.writes:
            at = pages[w.page] + w.offset - lo
            buf[at : at + len(w.data)] = w.data
        return bytes(buf)
