"""The machine: one Unicorn address space holding the image, the shared clock pages, and a
stack per task; the vCPUs are the tasks' saved CPU contexts.

Readers never write the clock pages, so all vCPUs can share one address space: switching
vCPUs is a context save/restore, and a host write is a plain memory write. The pages are
mapped read-only, so a guest store into them faults (a finding, not a crash).
"""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_CODE,
    UC_MODE_32,
    UC_MODE_64,
    UC_PROT_ALL,
    UC_PROT_READ,
)
from unicorn import x86_const as ux

from emu.engine import binding
from emu.errors import ImageError
from emu.image.elf import PAGE, Image

#: The binding's private C API handles; `binding` refuses an unsupported Unicorn first.
_ucmod = binding.load()

# The Python 3 binding, where type checkers find its annotations (`unicorn` itself picks
# between bindings at run time); imported after `binding` has checked the version.
from unicorn.unicorn_py3.unicorn import Uc, UcContext, UcError  # noqa: E402

if TYPE_CHECKING:
    from _ctypes import CFuncPtr

IMAGE_BASE = 0x4000_0000
STACK_BASE = 0x6000_0000
STACK_SIZE = 0x10000
#: Reads return here; the executor stops the engine when the PC reaches it.
EXIT_ADDR = 0x7000_0000
#: The part of each stack cleared before every run, so no run sees another's leftovers.
STACK_CLEAR = 0x1000

REGS64 = (
    "rax",
    "rbx",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "rbp",
    "rsp",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
)
REGS32 = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp")


def _reg(name: str) -> int:
    return int(getattr(ux, "UC_X86_REG_" + name.upper()))


@dataclass(frozen=True)
class Layout:
    """Where things are in the guest address space."""

    base: int
    pages: dict[str, int]
    shared: tuple[int, int]

    def page(self, name: str) -> int:
        return self.pages[name]

    def locate(self, addr: int) -> tuple[str, int] | None:
        """(page name, offset in it) for an address in the clock pages, else None."""
        for start, name in sorted(((a, n) for n, a in self.pages.items()), reverse=True):
            if start <= addr < start + PAGE:
                return name, addr - start
        return None


def _address_of(fn: CFuncPtr) -> int:
    """The address of a ctypes function object."""
    address = ctypes.cast(fn, ctypes.c_void_p).value
    assert address is not None
    return address


class _RegBatch:
    """C arrays for one `uc_reg_read_batch` of the general registers: ids, a pointer to
    each value slot, the 64-bit slots (a 32-bit register fills the low half; the high
    half stays 0)."""

    def __init__(self, ids: tuple[int, ...]) -> None:
        n = self.n = len(ids)
        self.ids = (ctypes.c_int * n)(*ids)
        self.values = (ctypes.c_uint64 * n)()
        base = ctypes.addressof(self.values)
        self.ptrs = (ctypes.c_void_p * n)(*(base + 8 * i for i in range(n)))

    def read(self, lib: Any, handle: Any) -> list[int]:
        status = lib.uc_reg_read_batch(handle, self.ids, self.ptrs, self.n)
        if status:
            raise UcError(status)
        return list(self.values)


class Machine:
    """Unicorn plumbing for one image: memory, stacks, register access, entry contexts."""

    def __init__(self, image: Image, tasks: int, clock: str | int = "CLOCK_MONOTONIC") -> None:
        from emu.image.abi import make_abi

        self.image = image
        self.abi = make_abi(image, EXIT_ADDR, clock)
        self.bits = image.bits
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64 if self.bits == 64 else UC_MODE_32)
        self.tasks = tasks
        base = IMAGE_BASE
        pages = {name: base + off for name, off in image.pages.items()}
        lo = min(pages.values())
        hi = max(pages.values()) + PAGE
        self.layout = Layout(base, pages, (lo, hi))
        # The clock pages and the stacks live in host memory we own (mem_map_ptr): a host
        # store or a stack reset is then a memmove, not an engine call (~5 us each). Unicorn
        # snapshots would not see this memory, but the executor saves CPU contexts only.
        self._shared = self._map_owned(lo, hi - lo, UC_PROT_READ)
        self._shared_lo = lo
        self._zero_pages = bytes(hi - lo)
        self._stack_tops = [self._stack_template(i) for i in range(tasks)]
        span_lo, span_hi = image.span
        start = base + (span_lo & ~(PAGE - 1))
        size = ((base + span_hi + PAGE - 1) & ~(PAGE - 1)) - start
        if start < hi:
            raise ImageError(
                f"{image.name}: the image overlaps its clock pages; link it above the pages its "
                "absolute page symbols place below the image base"
            )
        self.uc.mem_map(start, size, UC_PROT_ALL)
        for seg in image.segments:
            self.uc.mem_write(base + seg.vaddr, seg.data)
        self._stacks = self._map_owned(STACK_BASE, STACK_SIZE * tasks, UC_PROT_ALL)
        self.uc.mem_map(EXIT_ADDR, PAGE, UC_PROT_ALL)
        self.uc.mem_write(EXIT_ADDR, b"\xf4" * 16)  # hlt: never executed, the engine stops first
        self.entry = base + image.entry
        self.pc = ux.UC_X86_REG_RIP if self.bits == 64 else ux.UC_X86_REG_EIP
        self.sp = ux.UC_X86_REG_RSP if self.bits == 64 else ux.UC_X86_REG_ESP
        self.reg_names = REGS64 if self.bits == 64 else REGS32
        self.reg_ids = tuple(_reg(n) for n in self.reg_names)
        self._entry_ctx = [self._make_entry(i) for i in range(tasks)]
        # The binding's reg_read costs ~1.5 us in type dispatch; hooks read a register per
        # visible load, so call the C API directly for plain 64-bit registers.
        self._lib = _ucmod.uclib
        self._h = self.uc._uch
        self._val = ctypes.c_uint64()
        self._ref = ctypes.byref(self._val)
        self._callbacks: list[object] = []
        self._regs = _RegBatch(self.reg_ids)
        self._error: BaseException | None = None

    # The binding's hook trampoline and emu_start/emu_stop wrappers cost ~3 us per call
    # in layers of Python; the executor calls them ~60 times a run, so it uses these.

    def guarded(self, fn: Callable[[int], None]) -> Callable[[int], None]:
        """`fn(addr)` made safe to call from the engine: an exception stops the engine and
        is raised again by `start`, as the binding does (ctypes would otherwise print and
        swallow it, even Ctrl-C)."""

        def guard(address: int) -> None:
            try:
                fn(address)
            except BaseException as e:
                if self._error is None:
                    self._error = e
                self._lib.uc_emu_stop(self._h)

        return guard

    def hook_code(self, addr: int, fn: Callable[[int], None]) -> None:
        """Call `fn(addr)` before the instruction at `addr` executes (see `guarded`)."""
        guard = self.guarded(fn)
        cb = _ucmod.HOOK_CODE_CFUNC(lambda _uc, address, _size, _data: guard(address))
        self._callbacks.append(cb)  # the engine holds only a raw pointer to it
        self.hook_native(addr, _address_of(cb), None)

    def hook_native(
        self, addr: int, callback: int, data: int | None, end: int | None = None
    ) -> None:
        """Call the C function at `callback` (a Unicorn code hook) with `data` before the
        instruction at `addr` executes (before every instruction in `addr..end` with `end`)."""
        handle = _ucmod.uc_hook_h()
        status = self._lib.uc_hook_add(
            self._h,
            ctypes.byref(handle),
            UC_HOOK_CODE,
            ctypes.c_void_p(callback),
            ctypes.c_void_p(data),
            ctypes.c_uint64(addr),
            ctypes.c_uint64(addr if end is None else end),
        )
        if status:
            raise UcError(status)

    def c_function(self, name: str) -> int:
        """The address of the Unicorn C API function `name`."""
        return _address_of(getattr(self._lib, name))

    def keep(self, obj: object) -> None:
        """Keep `obj` alive as long as the engine (it holds raw pointers into it)."""
        self._callbacks.append(obj)

    def start(self, begin: int, until: int, count: int) -> None:
        """Run from `begin` until `until`, `count` instructions, or a `stop` from a hook."""
        self._error = None
        self.uc._hook_exception = None  # hooks added through the binding (stepping mode)
        status = self._lib.uc_emu_start(self._h, begin, until, 0, count)
        if status:
            raise UcError(status)
        error = self._error or self.uc._hook_exception
        if error is not None:
            self._error = self.uc._hook_exception = None
            raise error

    def stop(self) -> None:
        """Stop the engine after the current hook returns (from a hook only)."""
        self._lib.uc_emu_stop(self._h)

    def _map_owned(self, addr: int, size: int, perms: int) -> tuple[mmap.mmap, int]:
        """Map `size` bytes at guest `addr` onto anonymous host memory; (buffer, host address)."""
        buf = mmap.mmap(-1, size)
        host = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        self.uc.mem_map_ptr(addr, size, perms, host)
        return buf, host

    def reg(self, reg_id: int) -> int:
        # A 32-bit register fills only the low half of the buffer.
        self._val.value = 0
        self._lib.uc_reg_read(self._h, reg_id, self._ref)
        return self._val.value

    def set_reg(self, reg_id: int, value: int) -> None:
        self._val.value = value
        self._lib.uc_reg_write(self._h, reg_id, self._ref)

    def _frame_top(self, task: int) -> int:
        return STACK_BASE + STACK_SIZE * (task + 1) - 64

    def _frame(self, task: int) -> tuple[int, bytes]:
        """(entry sp, the call frame's bytes: return address then the ABI's stack arguments)."""
        word = self.image.bits // 8
        words = self.abi.frame(task, self._frame_top(task))
        # The return address sits one word below the top, as before; arguments go below the
        # frame top too, so the frame ends at the top.
        sp = self._frame_top(task) - word * len(words)
        return sp, b"".join(w.to_bytes(word, "little") for w in words)

    def _stack_template(self, task: int) -> bytes:
        top = bytearray(STACK_CLEAR)
        sp, frame = self._frame(task)
        at = sp - (STACK_BASE + STACK_SIZE * (task + 1) - STACK_CLEAR)
        top[at : at + len(frame)] = frame
        return bytes(top)

    def _make_entry(self, task: int) -> UcContext:
        """The CPU context at the call of the entry function, for `task`'s stack."""
        uc = self.uc
        for r in self.reg_ids:
            uc.reg_write(r, 0)
        sp, frame = self._frame(task)
        uc.mem_write(sp, frame)
        for r, v in self.abi.regs(task, self._frame_top(task)).items():
            uc.reg_write(r, v)
        uc.reg_write(self.sp, sp)
        uc.reg_write(self.pc, self.entry)
        uc.reg_write(ux.UC_X86_REG_EFLAGS, 0x202)
        return uc.context_save()

    def entry_context(self, task: int) -> UcContext:
        return self._entry_ctx[task]

    def reset(self, pages: bytes | None = None) -> None:
        """Put `pages` (default: zeros) in the clock pages; clear the hot end of every stack."""
        data = pages if pages is not None else self._zero_pages
        ctypes.memmove(self._shared[1], data, len(data))
        self.set_stacks(self._stack_tops)

    def _hot(self, task: int) -> int:
        """Where the hot end of `task`'s stack (the STACK_CLEAR bytes below its top) is."""
        return self._stacks[1] + STACK_SIZE * (task + 1) - STACK_CLEAR

    def stacks(self) -> tuple[bytes, ...]:
        """The hot end of every task's stack (what `reset` clears), for a snapshot."""
        return tuple(self.stack(task) for task in range(self.tasks))

    def stack(self, task: int) -> bytes:
        """The hot end of `task`'s stack."""
        return ctypes.string_at(self._hot(task), STACK_CLEAR)

    def set_stacks(self, hot: Sequence[bytes]) -> None:
        """Put back hot ends (`stacks` returned them; `reset` puts the initial ones)."""
        for task, data in enumerate(hot):
            ctypes.memmove(self._hot(task), data, STACK_CLEAR)

    def write(self, addr: int, data: bytes) -> bool:
        """A host store into the clock pages (guest address `addr`); False when the bytes
        were there already (the store changed nothing)."""
        at = self._shared[1] + addr - self._shared_lo
        if ctypes.string_at(at, len(data)) == data:
            return False
        ctypes.memmove(at, data, len(data))
        return True

    def result(self, task: int = 0) -> int:
        """The read's 64-bit result by the image's ABI (rax or edx:eax for project readers,
        the timespec in ns for `__vdso_clock_gettime`)."""
        return self.abi.result(self.uc, task, self._frame_top(task))

    def regs(self) -> dict[str, int]:
        """The general registers by name; one C batch read (stepping calls this twice per
        instruction, and the binding's per-register read dominated a traced hang)."""
        values = self._regs.read(self._lib, self._h)
        return dict(zip(self.reg_names, values, strict=True))

    def set_tsc(self, value: int, aux: int | None) -> None:
        """Registers after `rdtsc` (edx:eax), or `rdtscp` when `aux` is given (ecx = TSC_AUX)."""
        wide = self.bits == 64
        # A 64-bit write also clears the upper halves, as rdtsc does.
        self.set_reg(ux.UC_X86_REG_RAX if wide else ux.UC_X86_REG_EAX, value & 0xFFFFFFFF)
        self.set_reg(ux.UC_X86_REG_RDX if wide else ux.UC_X86_REG_EDX, value >> 32 & 0xFFFFFFFF)
        if aux is not None:
            self.set_reg(ux.UC_X86_REG_RCX if wide else ux.UC_X86_REG_ECX, aux)
