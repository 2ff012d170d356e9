"""Static scan of an image's code: which instructions can be visible operations.

A visible operation is a load that can touch a shared clock page, a TSC or cpu-number read
(`rdtsc`, `rdtscp`, `rdpid`), or a way into the kernel (`syscall`, `int 0x80`,
`sysenter`). The executor hooks exactly these addresses, so the guest runs at JIT speed
everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import capstone
from capstone import x86_const as cx
from unicorn import x86_const as ux

from emu.image.elf import Image

LOAD, TSC, TSCP, RDPID, SYSCALL, FENCE = "load", "rdtsc", "rdtscp", "rdpid", "syscall", "fence"
_KIND = {
    "rdtsc": TSC,
    "rdtscp": TSCP,
    "rdpid": RDPID,
    "syscall": SYSCALL,
    "sysenter": SYSCALL,
    "lfence": FENCE,
    "mfence": FENCE,
    "cpuid": FENCE,
}
_STACK_REGS = {"rsp", "esp", "sp"}


@dataclass(frozen=True)
class Mem:
    """A memory read operand: `base + index*scale + disp`, or a fixed image address."""

    size: int
    base: int | None = None
    index: int | None = None
    scale: int = 1
    disp: int = 0
    fixed: int | None = None


@dataclass(frozen=True)
class Site:
    """An instruction the executor hooks; `kind` is one of the constants above."""

    addr: int
    size: int
    kind: str
    mem: Mem | None = None
    #: Destination register of `rdpid` (a unicorn register id).
    reg: int | None = None


@cache
def capstone_for(bits: int) -> capstone.Cs:
    cs = capstone.Cs(
        capstone.CS_ARCH_X86, capstone.CS_MODE_64 if bits == 64 else capstone.CS_MODE_32
    )
    cs.detail = True
    return cs


def uc_reg(cs: capstone.Cs, reg: int) -> int:
    """Unicorn's id for a capstone register id."""
    return int(getattr(ux, "UC_X86_REG_" + cs.reg_name(reg).upper()))


def scan(image: Image, shared: tuple[int, int]) -> list[Site]:
    """Every hooked instruction of the image's code, image-relative addresses.

    `shared` is the image-relative range of the clock pages; a RIP-relative load outside it
    can never be visible and is not hooked.
    """
    cs = capstone_for(image.bits)
    sites: list[Site] = []
    for start, end in image.text:
        code = image.read(start, end - start)
        for i in cs.disasm(code, start):
            site = _classify(cs, i, shared)
            if site is not None:
                sites.append(site)
    return sites


def _classify(cs: capstone.Cs, i: capstone.CsInsn, shared: tuple[int, int]) -> Site | None:
    kind = _KIND.get(i.mnemonic)
    if kind == RDPID:
        return Site(i.address, i.size, RDPID, reg=uc_reg(cs, i.operands[0].reg))
    if kind is not None:
        return Site(i.address, i.size, kind)
    if i.mnemonic == "int" and i.operands and i.operands[0].imm == 0x80:
        return Site(i.address, i.size, SYSCALL)
    if i.mnemonic in ("lea", "nop") or i.mnemonic.startswith(("nop", "prefetch")):
        return None
    for op in i.operands:
        if op.type != cx.X86_OP_MEM or not op.access & capstone.CS_AC_READ:
            continue
        m = op.mem
        if m.segment in (cx.X86_REG_FS, cx.X86_REG_GS):
            # `call *%gs:0x10` is i386's way into the kernel (__kernel_vsyscall).
            if i.group(capstone.CS_GRP_CALL):
                return Site(i.address, i.size, SYSCALL)
            continue
        base = cs.reg_name(m.base) if m.base else None
        if base in _STACK_REGS:
            continue
        if base in ("rip", "eip"):
            ea = i.address + i.size + m.disp
            if not shared[0] <= ea < shared[1]:
                continue
            return Site(i.address, i.size, LOAD, Mem(op.size, fixed=ea))
        mem = Mem(
            op.size,
            base=uc_reg(cs, m.base) if m.base else None,
            index=uc_reg(cs, m.index) if m.index else None,
            scale=m.scale,
            disp=m.disp,
        )
        return Site(i.address, i.size, LOAD, mem)
    return None
