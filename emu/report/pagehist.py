"""The shared pages' contents at any logical time of a finished run.

A fast run records each host step's stores but not the bytes a load got; this rebuilds
them: the boot image the host's setup gives (as the executor boots it) and, on top, every
host step's stores in order. Explanations and field histories read load values here, so
neither needs a stepping run.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from emu.engine.run import Run
from host_model.base import HostView
from host_model.registry import make_host
from host_model.vdso_data import with_vdso_data

if TYPE_CHECKING:
    from emu.engine.executor import Executor


class PageHistory:
    """Byte address -> its value at each time; built once per run (host steps are few)."""

    def __init__(self, executor: Executor, run: Run) -> None:
        sc = executor.scenario
        layout = executor.machine.layout
        pages = layout.pages
        host = make_host(sc.host, sc.host_params)
        clock = executor.host_side.clock(host, executor.image.clock_seed)
        setup = with_vdso_data(
            host.setup(HostView(clock, 0, sc.vcpus)), executor.image.vdso_data, clock.boot_ns
        )
        #: The boot image: address -> byte (bytes never written read as 0).
        self.boot: dict[int, int] = {}
        for w in setup.writes:
            start = pages[w.page] + w.offset
            for i, b in enumerate(w.data):
                self.boot[start + i] = b
        #: Address -> [(time of the store, index into run.host, byte)], in time order.
        self.stores: dict[int, list[tuple[int, int, int]]] = {}
        for h, ev in enumerate(run.host):
            for w in ev.step.writes:
                start = pages[w.page] + w.offset
                for i, b in enumerate(w.data):
                    self.stores.setdefault(start + i, []).append((ev.t, h, b))

    def byte(self, addr: int, t: int) -> int:
        """The byte at `addr` as a load at time `t` sees it (stores before `t` only)."""
        hist = self.stores.get(addr)
        if hist:
            i = bisect.bisect_left(hist, (t, -1, -1)) - 1
            if i >= 0:
                return hist[i][2]
        return self.boot.get(addr, 0)

    def value(self, addr: int, width: int, t: int) -> int:
        """The little-endian value of `width` bytes at `addr` as a load at time `t` sees it."""
        return int.from_bytes(bytes(self.byte(a, t) for a in range(addr, addr + width)), "little")

    def after(self, addr: int, width: int, h_index: int) -> int:
        """The value of `width` bytes at `addr` right after host step `h_index` (a store's
        new value; -1 = the boot image)."""
        out = bytearray()
        for a in range(addr, addr + width):
            b = self.boot.get(a, 0)
            for _t, h, v in self.stores.get(a, ()):
                if h > h_index:
                    break
                b = v
            out.append(b)
        return int.from_bytes(bytes(out), "little")
