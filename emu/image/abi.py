"""How a read calls its entry function and where its result comes from, one class per ABI.

- `BlobAbi`: the project's readers, `uint64_t vdsofuzz_read(void)`; result in rax / edx:eax.
- `ClockGettimeAbi`: a real vDSO's `__vdso_clock_gettime(clk, &ts)` (x86-64: rdi, rsi;
  i386: cdecl arguments on the stack, `__vdso_clock_gettime64` with a 64-bit timespec when
  the image has it); result = ts.tv_sec * 1e9 + ts.tv_nsec read back after the return.

An ABI gives the stack words of the call frame (return address first) for a task, which
the machine writes at every reset, and the registers to set at entry.
"""

from __future__ import annotations

from unicorn import x86_const as ux

from emu.errors import UsageError
from emu.image.structs import CLOCK_IDS

NS_PER_S = 1_000_000_000


def clock_id(clock: str | int) -> int:
    """'CLOCK_MONOTONIC', 'MONOTONIC', 'monotonic_raw' or a number -> the uapi clock id."""
    if isinstance(clock, int):
        return clock
    name = clock.upper()
    if not name.startswith("CLOCK_"):
        name = "CLOCK_" + name
    if name not in CLOCK_IDS:
        raise UsageError(
            f"unknown clock {clock!r}; use CLOCK_MONOTONIC, CLOCK_MONOTONIC_RAW or CLOCK_REALTIME"
        )
    return CLOCK_IDS[name]


class BlobAbi:
    name = "blob"

    def __init__(self, bits: int, exit_addr: int) -> None:
        self.bits = bits
        self.word = bits // 8
        self.exit_addr = exit_addr

    def frame(self, task: int, top: int) -> list[int]:
        """Stack words from the entry sp upwards: the return address, then arguments."""
        return [self.exit_addr]

    def regs(self, task: int, top: int) -> dict[int, int]:
        return {}

    def result(self, uc, task: int, top: int) -> int:
        if self.bits == 64:
            return uc.reg_read(ux.UC_X86_REG_RAX)
        lo = uc.reg_read(ux.UC_X86_REG_EAX) & 0xFFFFFFFF
        hi = uc.reg_read(ux.UC_X86_REG_EDX) & 0xFFFFFFFF
        return hi << 32 | lo


class ClockGettimeAbi(BlobAbi):
    name = "clock_gettime"
    #: The timespec sits this far above the call frame's top, inside the task's stack area.
    TS_OFFSET = 16

    def __init__(self, bits: int, exit_addr: int, clock: str | int, ts64: bool) -> None:
        super().__init__(bits, exit_addr)
        self.clock = clock_id(clock)
        #: 64-bit tv_sec/tv_nsec (x86-64, i386 `__vdso_clock_gettime64`) or old 32-bit.
        self.ts64 = ts64

    def ts_addr(self, top: int) -> int:
        return top + self.TS_OFFSET

    def frame(self, task: int, top: int) -> list[int]:
        if self.bits == 64:
            return [self.exit_addr]
        return [self.exit_addr, self.clock, self.ts_addr(top)]

    def regs(self, task: int, top: int) -> dict[int, int]:
        if self.bits == 64:
            return {ux.UC_X86_REG_RDI: self.clock, ux.UC_X86_REG_RSI: self.ts_addr(top)}
        return {}

    def result(self, uc, task: int, top: int) -> int:
        """The timespec as ns; -1 return (EINVAL/fallback without syscall) is never seen here
        because the syscall site ends the read first."""
        raw = bytes(uc.mem_read(self.ts_addr(top), 16))
        if self.ts64:
            sec = int.from_bytes(raw[0:8], "little", signed=True)
            nsec = int.from_bytes(raw[8:16], "little", signed=True)
        else:
            sec = int.from_bytes(raw[0:4], "little", signed=True)
            nsec = int.from_bytes(raw[4:8], "little", signed=True)
        return (sec * NS_PER_S + nsec) & ((1 << 64) - 1)


def make_abi(image, exit_addr: int, clock: str | int = "CLOCK_MONOTONIC") -> BlobAbi:
    if image.call_abi == "clock_gettime":
        ts64 = image.bits == 64 or image.entry_name.endswith("64")
        return ClockGettimeAbi(image.bits, exit_addr, clock, ts64)
    return BlobAbi(image.bits, exit_addr)
