"""A compiled writer as the host agent: its stores become the host model's steps.

With `--writer`, the host model still decides when an update happens, whose slot, parking,
TSC changes and the planned record `next`; `host_model.writer.republish` hands the update
to `WriterRun` (through `HostView.writer`) instead of the model's own store protocol. Each
store the writer makes into the slot is one `WriterStep` (a `HostStep` with one
`PageWrite` named by field, labelled with the writer's instruction), so the scheduler,
oracles, traces, replay and the native lane see the same shape as a Python model's steps.
The record is published with the writer's last store (what follows it is invisible).

The planned record is computed when the host model's rule says (`host_model.base`): the
writer's stores before its first load of `next` cannot depend on it, so they are taken
first (found by running the writer over a placeholder `next`), and the record is planned
once they have been. A writer that loads `next` before any store gets a step of its own
first ("host calls the writer", no store): the record is planned once it has been taken.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from emu.engine.machine import Layout
from emu.engine.writer_agent import WriterEngine
from emu.errors import UsageError
from emu.image.writer import load_writer
from host_model.abi import PVTI_SLOT
from host_model.base import HostStep, PageWrite, Publish
from host_model.pages import describe
from host_model.pvti import Pvti, field_at
from host_model.writer import slot_key

#: Updates whose steps are kept per writer (runs repeat the same updates).
_KEPT = 4096


@dataclass(frozen=True)
class WriterStep(HostStep):
    """A host step the compiled writer made: one store, or the writer's failure."""

    #: The writer's instructions that led to this step, the storing one last.
    insns: tuple[str, ...] = ()
    #: Why the writer is at fault ("" for a store): a fault, a loop, a stray store.
    error: str = ""


def _field_label(vcpu: int, within: int, size: int) -> str:
    """`vcpu0.version` or, for a store over several fields, `vcpu0.version..tsc_timestamp`."""
    first = describe("pvclock", vcpu * PVTI_SLOT + within)
    last = field_at(within + size - 1).name
    return first if first.endswith("." + last) else f"{first}..{last}"


class CompiledWriter:
    """One writer ELF loaded for one machine's layout; `bind()` gives a run its agent."""

    def __init__(self, spec: str, layout: Layout) -> None:
        self.image = load_writer(spec)
        if "pvclock" not in layout.pages:
            raise UsageError(f"--writer {spec}: the reader has no pvclock page to write")
        self.page = layout.pages["pvclock"]
        self.engine = WriterEngine(self.image, layout.shared)
        self.lo = layout.shared[0]
        self._steps: dict[tuple[int, bytes, bytes], tuple[tuple[HostStep, ...], bytes]] = {}

    def bind(self) -> WriterRun:
        return WriterRun(self)

    def steps(self, vcpu: int, old: bytes, nxt: bytes) -> tuple[tuple[HostStep, ...], bytes]:
        """The writer's steps over `vcpu`'s slot holding `old`, with `next` = `nxt`, and the
        slot's bytes after them."""
        key = (vcpu, old, nxt)
        hit = self._steps.get(key)
        if hit is None:
            if len(self._steps) >= _KEPT:
                self._steps.clear()
            hit = self._steps[key] = self._make_steps(vcpu, old, nxt)
        return hit

    def _make_steps(self, vcpu: int, old: bytes, nxt: bytes) -> tuple[tuple[HostStep, ...], bytes]:
        slot_off = vcpu * PVTI_SLOT
        ex = self.engine.execute(self.page + slot_off, old, nxt)
        cur = bytearray(old)
        steps: list[HostStep] = []
        for s in ex.stores:
            within = self.lo + s.offset - self.page - slot_off
            before = bytes(cur[within : within + len(s.data)])
            cur[within : within + len(s.data)] = s.data
            label = _field_label(vcpu, within, len(s.data))
            was, now = int.from_bytes(before, "little"), int.from_bytes(s.data, "little")
            write = PageWrite("pvclock", slot_off + within, s.data, label, was, now)
            text = f"{label} {was:#x} -> {now:#x} by {s.insn.partition(': ')[0]}"
            steps.append(WriterStep(text, writes=(write,), insns=s.insns))
        if ex.error:
            steps.append(WriterStep(f"writer {ex.error}", insns=ex.tail, error=ex.error))
            return tuple(steps), bytes(cur)
        publish = (Publish(slot_key(vcpu), Pvti.unpack(ex.final)),)
        if steps:
            last = steps[-1]
            assert isinstance(last, WriterStep)
            steps[-1] = WriterStep(
                last.label, writes=last.writes, publish=publish, insns=last.insns
            )
        else:
            steps.append(WriterStep(f"vcpu{vcpu} writer returned without a store", publish=publish))
        return tuple(steps), ex.final


class WriterRun:
    """The writer agent of one run: `republish` calls it for every pvti update."""

    def __init__(self, writer: CompiledWriter) -> None:
        self.writer = writer
        #: vCPU -> its slot's bytes after the writer's last complete update.
        self.slots: dict[int, bytes] = {}
        #: Set once the writer failed: the host makes no further stores.
        self.failed = False

    def __call__(self, vcpu: int, old: Pvti, plan: Callable[[], Pvti]) -> Iterator[HostStep]:
        """The writer's steps storing the planned record over `old` in `vcpu`'s slot."""
        if self.failed:
            return
        kept = self.slots.get(vcpu)
        old_b = kept if kept is not None and Pvti.unpack(kept) == old else old.pack()
        probe, _ = self.writer.steps(vcpu, old_b, old_b)
        first = self.writer.engine.execute(self.writer.page + vcpu * PVTI_SLOT, old_b, old_b)
        k = first.before_next
        if first.error and k >= len(first.stores):
            # It failed before it looked at the planned record: nothing to plan.
            self.failed = True
            yield from probe
            return
        if k == 0:
            # It loads `next` before any store: the host calls it (and plans the record)
            # at a step of its own, as the rule in `host_model.base` wants, not whenever
            # this generator is asked for the update's first step.
            yield WriterStep(f"vcpu{vcpu} host calls the writer")
        yield from probe[:k]
        steps, final = self.writer.steps(vcpu, old_b, plan().pack())
        if [s.writes for s in steps[:k]] != [s.writes for s in probe[:k]]:
            raise AssertionError("the writer's stores before it loads `next` depend on it")
        # (When k covers every store, the writer never loaded `next`: `probe` was all of it.)
        rest = steps[k:]
        yield from rest
        if any(isinstance(s, WriterStep) and s.error for s in rest):
            self.failed = True
        else:
            self.slots[vcpu] = final
