"""One function's machine code as structured instructions, and which registers hold addresses.

`decode_function` decodes a function of an ELF image with capstone into `Insn`s whose
operands are registers, immediates and memory references (source first, destination last).
`transfer` is an abstract interpreter over them: it tracks which registers (and spilled stack
slots) hold "image base + constant", so a memory operand resolves to an image-relative
address (`mem_address`), i386 GOT-relative addressing (`__x86.get_pc_thunk`) included.
`emu.image.window` walks the paths of a reader's entry function with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import capstone
from capstone import x86_const as cx
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from emu.errors import ImageError
from emu.image.elf import open_elf

REG_FAMILY: dict[str, str] = {}
for _fam, _names in {
    "ax": "rax eax ax al ah",
    "bx": "rbx ebx bx bl bh",
    "cx": "rcx ecx cx cl ch",
    "dx": "rdx edx dx dl dh",
    "si": "rsi esi si sil",
    "di": "rdi edi di dil",
    "bp": "rbp ebp bp bpl",
    "sp": "rsp esp sp spl",
}.items():
    for _n in _names.split():
        REG_FAMILY[_n] = _fam
for _i in range(8, 16):
    for _suffix in ("", "d", "w", "b"):
        REG_FAMILY[f"r{_i}{_suffix}"] = f"r{_i}"
FULL_WIDTH = {
    64: {"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"} | {f"r{i}" for i in range(8, 16)},
    32: {"eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp"},
}
CALL_CLOBBERS = {"ax", "cx", "dx", "si", "di", "r8", "r9", "r10", "r11"}
IMPLICIT_WRITES = {
    "rdtsc": {"ax", "dx"},
    "rdtscp": {"ax", "dx", "cx"},
    "cpuid": {"ax", "bx", "cx", "dx"},
    "mul": {"ax", "dx"},
    "div": {"ax", "dx"},
    "idiv": {"ax", "dx"},
    "cdq": {"dx"},
    "cqo": {"dx"},
    "cdqe": {"ax"},
    "cwde": {"ax"},
    "syscall": {"ax", "cx", "r11"},
    "int": {"ax"},
}
NO_WRITE = {"cmp", "test", "bt", "push", "lfence", "mfence", "nop", "jmp", "ret", "ud2"}


@dataclass(frozen=True)
class Reg:
    name: str


@dataclass(frozen=True)
class Imm:
    value: int


@dataclass(frozen=True)
class Mem:
    """`disp(base, index, scale)`; `rip_target` is the absolute address of a RIP-relative one."""

    base: str | None
    index: str | None
    scale: int
    disp: int
    rip_target: int | None = None


Operand = Reg | Imm | Mem


@dataclass(frozen=True)
class Insn:
    """One decoded instruction; operands in source-first order (the destination is last)."""

    addr: int
    next_addr: int
    mnemonic: str
    operands: tuple[Operand, ...]
    target: int | None  # direct branch/call target
    target_name: str | None


# A tracked value: (constant, number of image-base terms).  Address = base*n + constant.
Value = tuple[int, int]
State = dict[str, Value]


# ------------------------------------------------------------------------------ decoding


def _operand(cs: capstone.Cs, insn: capstone.CsInsn, op: capstone.x86.X86Op) -> Operand:
    if op.type == cx.X86_OP_REG:
        return Reg(cs.reg_name(op.reg))
    if op.type == cx.X86_OP_IMM:
        return Imm(op.imm)
    m = op.mem
    base = cs.reg_name(m.base) if m.base else None
    index = cs.reg_name(m.index) if m.index else None
    if base == "rip":
        return Mem(None, None, 1, m.disp, rip_target=insn.address + insn.size + m.disp)
    return Mem(base, index, m.scale, m.disp)


def _functions(elf: ELFFile) -> tuple[dict[str, tuple[int, int]], dict[int, str]]:
    """Function symbol -> (start, end), and address -> symbol name (for call targets)."""
    funcs: dict[str, tuple[int, int]] = {}
    names: dict[int, str] = {}
    starts: list[int] = []
    for sec in elf.iter_sections():
        if not isinstance(sec, SymbolTableSection):
            continue
        for sym in sec.iter_symbols():
            if not sym.name or sym["st_shndx"] == "SHN_UNDEF":
                continue
            names.setdefault(sym["st_value"], sym.name)
            if sym["st_info"]["type"] == "STT_FUNC":
                starts.append(sym["st_value"])
                size = sym["st_size"]
                funcs.setdefault(sym.name, (sym["st_value"], sym["st_value"] + size))
    starts.sort()
    for name, (lo, hi) in funcs.items():
        if hi == lo:  # no size recorded: up to the next function
            later = [s for s in starts if s > lo]
            funcs[name] = (lo, later[0] if later else lo)
    return funcs, names


def decode_function(data: bytes, symbol: str, name: str = "image") -> list[Insn]:
    """The instructions of function `symbol` of ELF `data`, in address order."""
    elf = open_elf(data, name)
    bits = elf.elfclass
    funcs, names = _functions(elf)
    if symbol not in funcs:
        raise ImageError(f"{name}: no function symbol {symbol}")
    lo, hi = funcs[symbol]
    text = None
    for seg in elf.iter_segments():
        if (
            seg["p_type"] == "PT_LOAD"
            and seg["p_vaddr"] <= lo
            and hi <= seg["p_vaddr"] + seg["p_filesz"]
        ):
            start = seg["p_offset"] + lo - seg["p_vaddr"]
            text = data[start : start + hi - lo]
    if text is None:
        raise ImageError(f"{name}: {symbol} is not in a loaded segment")
    cs = capstone.Cs(
        capstone.CS_ARCH_X86, capstone.CS_MODE_64 if bits == 64 else capstone.CS_MODE_32
    )
    cs.detail = True
    out: list[Insn] = []
    for ins in cs.disasm(text, lo):
        mnemonic = ins.mnemonic.split()[-1]  # drop rep/lock/notrack/bnd prefixes
        ops = tuple(_operand(cs, ins, op) for op in reversed(ins.operands))
        target = target_name = None
        branch = mnemonic.startswith("j") or mnemonic == "call"
        if branch and len(ops) == 1 and isinstance(ops[0], Imm):
            target = ops[0].value & ((1 << bits) - 1)
            target_name = names.get(target)
            ops = ()
        out.append(Insn(ins.address, ins.address + ins.size, mnemonic, ops, target, target_name))
    return out


# ------------------------------------------------------------------ abstract interpreter


def to_signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def reg_of(operand: Operand) -> str | None:
    return operand.name if isinstance(operand, Reg) else None


def family(reg: str | None) -> str | None:
    return REG_FAMILY.get(reg) if reg else None


def mem_address(operand: Operand, state: State, bits: int) -> Value | None:
    """Resolve a memory operand to a tracked value, or None if unknown / not memory."""
    if not isinstance(operand, Mem):
        return None
    if operand.rip_target is not None:
        return (to_signed(operand.rip_target, bits), 1)
    total = (operand.disp, 0)
    for reg, scale in ((operand.base, 1), (operand.index, operand.scale)):
        if reg is None:
            continue
        value = state.get(REG_FAMILY.get(reg, reg))
        if value is None:
            return None
        total = (total[0] + value[0] * scale, total[1] + value[1] * scale)
    if operand.base is None and operand.index is None:
        return (to_signed(operand.disp, bits), 0)
    return total


def _slot(operand: Operand) -> str:
    return f"slot:{operand}"


def transfer(insn: Insn, state: State, bits: int) -> State:
    """Abstract effect of one instruction on the tracked registers and stack slots."""
    new = dict(state)
    op = insn.mnemonic
    ops = insn.operands
    dest = reg_of(ops[-1]) if ops else None
    fam = family(dest)
    if op == "call":
        return do_call(insn, new)
    if op == "pop" and fam:
        pushed = new.pop("push", None)
        set_reg(new, fam, dest, pushed, bits)
        return drop_slots(new)
    if fam == "sp" or op == "push":
        return drop_slots(new)
    for reg in IMPLICIT_WRITES.get(op, ()):
        new.pop(reg, None)
    src = ops[0] if ops else None
    if op == "mov" and len(ops) == 2:
        return do_mov(new, ops, dest, fam, bits)
    if op == "lea" and fam and src is not None:
        set_reg(new, fam, dest, mem_address(src, state, bits), bits)
        return new
    if op == "shl" and fam and len(ops) == 2 and isinstance(src, Imm):
        cur = state.get(fam)
        shifted = (cur[0] << src.value, 0) if cur and cur[1] == 0 else None
        set_reg(new, fam, dest, shifted, bits)
        return new
    if op in ("xor", "sub") and fam and len(ops) == 2 and ops[0] == ops[1]:
        set_reg(new, fam, dest, (0, 0), bits)
        return new
    if op == "or" and fam and len(ops) == 2 and isinstance(src, Imm):
        minus_one = to_signed(src.value, bits) == -1 or src.value & 0xFFFFFFFF == 0xFFFFFFFF
        set_reg(new, fam, dest, (-1, 0) if minus_one else None, bits)
        return new
    if op in ("inc", "dec") and fam and len(ops) == 1:
        set_reg(new, fam, dest, add_value(state.get(fam), Imm(1), state, op == "dec", bits), bits)
        return new
    if op in ("add", "sub") and fam and len(ops) == 2 and src is not None:
        value = add_value(state.get(fam), src, state, op == "sub", bits)
        set_reg(new, fam, dest, value, bits)
        return new
    if fam and op not in NO_WRITE:
        new.pop(fam, None)
        if op in ("xchg", "xadd") and len(ops) == 2 and reg_of(ops[0]):
            new.pop(family(reg_of(ops[0])) or "", None)
    return new


def do_call(insn: Insn, new: State) -> State:
    """A call's effect: the i386 PIC idioms (`call next; pop reg` and the get_pc_thunk
    helpers) load the return address (the image base plus a constant); any other call
    clobbers the caller-saved registers."""
    if insn.target == insn.next_addr:
        new["push"] = (insn.next_addr, 1)
    elif insn.target_name and insn.target_name.startswith("__x86.get_pc_thunk."):
        new[insn.target_name.rsplit(".", 1)[1]] = (insn.next_addr, 1)
    else:
        for reg in CALL_CLOBBERS:
            new.pop(reg, None)
    return new


def do_mov(
    new: State, ops: tuple[Operand, ...], dest: str | None, fam: str | None, bits: int
) -> State:
    src, dst = ops
    if fam:
        if isinstance(src, Imm):
            set_reg(new, fam, dest, (to_signed(src.value, bits), 0), bits)
        elif isinstance(src, Reg):
            set_reg(new, fam, dest, new.get(family(src.name) or ""), bits)
        else:
            set_reg(new, fam, dest, new.get(_slot(src)), bits)
    elif isinstance(dst, Mem) and isinstance(src, Imm):
        new[_slot(dst)] = (to_signed(src.value, bits), 0)
    elif isinstance(dst, Mem) and isinstance(src, Reg):
        value = new.get(family(src.name) or "")
        if value is None or not holds_value(src.name, value, bits):
            new.pop(_slot(dst), None)
        else:
            new[_slot(dst)] = value
    return new


def add_value(
    cur: Value | None, src: Operand, state: State, negate: bool, bits: int
) -> Value | None:
    if cur is None:
        return None
    if isinstance(src, Imm):
        delta: Value | None = (to_signed(src.value, bits), 0)
    elif isinstance(src, Reg):
        delta = state.get(family(src.name) or "")
    else:
        delta = None
    if delta is None:
        return None
    sign = -1 if negate else 1
    return (cur[0] + sign * delta[0], cur[1] + sign * delta[1])


def set_reg(state: State, fam: str, reg: str | None, value: Value | None, bits: int) -> None:
    """Track a register write; a narrower write or an unknown value forgets the register."""
    if value is None or reg is None or not holds_value(reg, value, bits):
        state.pop(fam, None)
    else:
        state[fam] = value


def holds_value(reg: str | None, value: Value, bits: int) -> bool:
    """Whether a write of `value` through register name `reg` keeps it exactly."""
    if reg in FULL_WIDTH[bits]:
        return True
    # x86-64 32-bit writes zero-extend: fine for small non-negative plain constants.
    return bits == 64 and reg in FULL_WIDTH[32] and value[1] == 0 and 0 <= value[0] < 1 << 31


def drop_slots(state: State) -> State:
    return {k: v for k, v in state.items() if not k.startswith("slot:")}


def successors(insn: Insn, index: dict[int, int]) -> list[int]:
    op = insn.mnemonic
    if op.startswith(("ret", "ud2", "hlt")):
        return []
    if op.startswith("jmp"):
        return [insn.target] if insn.target in index else []
    if op.startswith("j") and insn.target is not None:
        nxt = [insn.next_addr] if insn.next_addr in index else []
        return nxt + ([insn.target] if insn.target in index else [])
    return [insn.next_addr] if insn.next_addr in index else []
