"""Runs a compiled host writer (`vdsofuzz_host_write`) and records what it stores.

The writer is x86-64 host code mapped at its own base in an engine of its own, beside the
mirror of the readers' shared pages at the same addresses: `slot` points where the readers
see the vCPU's pvti, `next` into a private page, and the writer has its own stack. Its
loads of `next`, of its stack and of its own image are invisible; every store into the
shared pages is recorded, one `Store` per executed instruction (a 16-byte SSE store is one
store, which assumes the CPU makes it visible at once; a `rep movs` makes one store per
element, since each element is its own iteration).

Why its own engine: a host step can be taken from inside a reader's memory hook, and an
engine cannot be re-entered from its own hook. Running the writer to its end when the host
model starts an update is equivalent to running it store by store between reader
instructions, because readers never store to the shared pages: everything the writer
loads from its slot is what it stored itself, or what was there when it started. A writer
that loads other vCPUs' slots sees them as zeros (it has no business there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import capstone
from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_CODE,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_WRITE,
    UC_MODE_64,
    UC_PROT_ALL,
)
from unicorn import x86_const as ux
from unicorn.unicorn_py3.unicorn import Uc, UcError

from emu.image.elf import PAGE
from emu.image.writer import WriterImage

#: Where the writer's code, stack, `next` and return address sit (below the readers' image
#: base and clock pages, which the mirror keeps at their own addresses).
WRITER_BASE = 0x1000_0000
WRITER_STACK = 0x1800_0000
WRITER_STACK_SIZE = 0x10000
NEXT_ADDR = 0x1900_0000
WRITER_EXIT = 0x1A00_0000
#: A writer that executes this many instructions without returning loops.
WRITER_INSNS = 20_000
#: sizeof(struct pvclock_vcpu_time_info): the bytes of `slot` a writer may store to.
SLOT_SIZE = 32


@dataclass(frozen=True)
class Store:
    """One visible store of the writer: where (offset from the shared pages' start), what,
    by which instruction, and the writer's instructions since its previous store."""

    offset: int
    data: bytes
    #: Image-relative address of the storing instruction, and its disassembly.
    pc: int
    insn: str
    #: The writer's instructions since its previous store, this one last ("sym+off: insn").
    insns: tuple[str, ...]


@dataclass(frozen=True)
class Execution:
    """One run of the writer over a slot: its stores in order and how it ended."""

    stores: tuple[Store, ...]
    #: How many stores came before the writer's first load of `next` (those cannot depend
    #: on the planned record).
    before_next: int
    #: The slot's 32 bytes when the writer returned (or stopped).
    final: bytes
    #: "" when the writer returned; else why it is at fault (fault, loop, stray store).
    error: str = ""
    #: Instructions after its last store (to its return, or to where it failed).
    tail: tuple[str, ...] = field(default=())


class WriterEngine:
    """One writer, loaded into its own engine beside a mirror of the shared pages."""

    def __init__(self, image: WriterImage, shared: tuple[int, int]) -> None:
        self.image = image
        self.shared = shared
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self._map_image()
        lo, hi = shared
        self.uc.mem_map(lo, hi - lo, UC_PROT_ALL)
        self.uc.mem_map(WRITER_STACK, WRITER_STACK_SIZE, UC_PROT_ALL)
        self.uc.mem_map(NEXT_ADDR, PAGE, UC_PROT_ALL)
        self.uc.mem_map(WRITER_EXIT, PAGE, UC_PROT_ALL)
        self.cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self._text: dict[int, str] = {}
        self._run: _Recorder | None = None
        self.uc.hook_add(
            UC_HOOK_CODE,
            self._on_insn,
            begin=WRITER_BASE + image.span[0],
            end=WRITER_BASE + image.span[1] - 1,
        )
        self.uc.hook_add(UC_HOOK_MEM_WRITE, self._on_store, begin=lo, end=hi - 1)
        self.uc.hook_add(UC_HOOK_MEM_READ, self._on_next, begin=NEXT_ADDR, end=NEXT_ADDR + PAGE - 1)
        self._cache: dict[tuple[int, bytes, bytes], Execution] = {}

    def _map_image(self) -> None:
        lo, hi = self.image.span
        start = (WRITER_BASE + lo) & ~(PAGE - 1)
        size = ((WRITER_BASE + hi + PAGE - 1) & ~(PAGE - 1)) - start
        self.uc.mem_map(start, size, UC_PROT_ALL)
        self._image_bytes = bytearray(size)
        for seg in self.image.segments:
            at = WRITER_BASE + seg.vaddr - start
            self._image_bytes[at : at + len(seg.data)] = seg.data
        self._image_start = start

    def execute(self, slot: int, old: bytes, nxt: bytes) -> Execution:
        """Run the writer over the slot at address `slot` holding `old`, with `next` = `nxt`.
        The same arguments give the same execution (kept: runs repeat the same updates)."""
        key = (slot, old, nxt)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._execute(slot, old, nxt)
        return hit

    def _execute(self, slot: int, old: bytes, nxt: bytes) -> Execution:
        uc = self.uc
        lo, hi = self.shared
        uc.mem_write(self._image_start, bytes(self._image_bytes))  # a writer may patch itself
        uc.mem_write(lo, bytes(hi - lo))
        uc.mem_write(slot, old)
        uc.mem_write(NEXT_ADDR, nxt.ljust(PAGE, b"\0"))
        uc.mem_write(WRITER_STACK, bytes(WRITER_STACK_SIZE))
        sp = WRITER_STACK + WRITER_STACK_SIZE - 64
        uc.mem_write(sp, WRITER_EXIT.to_bytes(8, "little"))
        for reg, value in (
            (ux.UC_X86_REG_RSP, sp),
            (ux.UC_X86_REG_RDI, slot),
            (ux.UC_X86_REG_RSI, NEXT_ADDR),
            (ux.UC_X86_REG_RAX, 0),
        ):
            uc.reg_write(reg, value)
        rec = self._run = _Recorder(slot)
        error = ""
        try:
            uc.emu_start(WRITER_BASE + self.image.entry, WRITER_EXIT, count=WRITER_INSNS)
        except UcError as e:
            error = f"faulted ({e}) at {self._where(uc.reg_read(ux.UC_X86_REG_RIP))}"
        finally:
            self._run = None
        pc = uc.reg_read(ux.UC_X86_REG_RIP)
        if rec.stray:
            error = rec.stray
        elif not error and pc != WRITER_EXIT:
            error = f"did not return within {WRITER_INSNS} instructions (at {self._where(pc)})"
        stores = rec.stores(lo)
        return Execution(
            stores=stores,
            before_next=rec.before_next if rec.before_next >= 0 else len(stores),
            final=bytes(uc.mem_read(slot, SLOT_SIZE)),
            error=error,
            tail=tuple(rec.insns),
        )

    def _where(self, pc: int) -> str:
        return self.image.symbolize(pc - WRITER_BASE)

    def disasm(self, pc: int) -> str:
        """`vdsofuzz_host_write+0x12: mov dword ptr [rdi], eax` for an absolute pc."""
        text = self._text.get(pc)
        if text is None:
            code = bytes(self.uc.mem_read(pc, 16))
            insn = next(self.cs.disasm(code, pc - WRITER_BASE), None)
            shown = f"{insn.mnemonic} {insn.op_str}".strip() if insn else "(bad)"
            text = self._text[pc] = f"{self._where(pc)}: {shown}"
        return text

    # --- hooks (their arguments are Unicorn's) ----------------------------------------

    def _on_insn(self, uc: Uc, address: int, size: int, _data: Any) -> None:
        rec = self._run
        if rec is not None:
            rec.insn(address, self.disasm(address))

    def _on_store(
        self, uc: Uc, _access: int, address: int, size: int, value: int, _data: Any
    ) -> None:
        rec = self._run
        if rec is None:
            return
        if address < rec.slot or address + size > rec.slot + SLOT_SIZE:
            rec.stray = (
                f"stored {size} bytes at slot{address - rec.slot:+#x}, outside its "
                f"{SLOT_SIZE}-byte slot, at {self._where(rec.pc)}"
            )
            uc.emu_stop()
            return
        rec.store(address, value.to_bytes(size, "little", signed=value < 0))

    def _on_next(self, uc: Uc, _access: int, _address: int, _size: int, _v: int, _d: Any) -> None:
        rec = self._run
        if rec is not None and rec.before_next < 0:
            rec.before_next = len(rec.pieces_by_insn)


#: One storing instruction execution: (its instruction count, pc, disassembly, the
#: instructions since the previous store, the pieces the engine reported [(addr, bytes)]).
_Pieces = tuple[int, int, str, tuple[str, ...], list[tuple[int, bytes]]]


class _Recorder:
    """What one execution of the writer did, gathered by the hooks."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.count = 0
        self.pc = 0
        self.text = ""
        #: Instructions since the last store.
        self.insns: list[str] = []
        #: Per storing instruction execution: (count, pc, text, insns, [(addr, bytes)]).
        self.pieces_by_insn: list[_Pieces] = []
        self.before_next = -1
        self.stray = ""

    def insn(self, pc: int, text: str) -> None:
        self.count += 1
        self.pc, self.text = pc, text
        self.insns.append(text)

    def store(self, address: int, data: bytes) -> None:
        last = self.pieces_by_insn[-1] if self.pieces_by_insn else None
        if last is not None and last[0] == self.count:
            last[4].append((address, data))  # a wide store split by the engine: one store
            return
        self.pieces_by_insn.append((self.count, self.pc, self.text, tuple(self.insns), []))
        self.pieces_by_insn[-1][4].append((address, data))
        self.insns = []

    def stores(self, lo: int) -> tuple[Store, ...]:
        out = []
        for _count, pc, text, insns, pieces in self.pieces_by_insn:
            start = min(a for a, _ in pieces)
            end = max(a + len(d) for a, d in pieces)
            buf = bytearray(end - start)
            for a, d in pieces:
                buf[a - start : a - start + len(d)] = d
            out.append(Store(start - lo, bytes(buf), pc - WRITER_BASE, text, insns))
        return tuple(out)
