"""Where a reader's pvti loads sit relative to its version window, from its machine code.

For a project reader that reads vCPU 0's pvti under the version seqlock, say per field
whether the last load that feeds the returned time stays inside the version window (between
the final iteration's version load and its re-check), or how the compiled code leaves it:
`before-window`, `stale-on-retry`, `after-recheck`, `not-read`; and whether the re-check is
there at all. The blob build records the verdict in the manifest (`window`).

How: decode the entry function with capstone; a small abstract interpreter tracks which
registers (and spilled stack slots) hold "image base + constant", so every memory operand
resolves to a `pvclock_page` offset, i386 GOT-relative addressing included; then enumerate
the paths through the function (each backward branch taken at most twice) and classify, on
every path that returns a computed time, where each field's last load sits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import capstone
from capstone import x86_const as cx
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from emu.errors import ImageError
from emu.image.elf import open_elf
from host_model.abi import BLOB_ENTRY, BLOB_PAGES, pvti_field_at


class WindowError(ImageError):
    """The window analysis cannot run on this image (no entry, no successful path, ...)."""


FORMULA_FIELDS = ("tsc_timestamp", "system_time", "tsc_to_system_mul", "tsc_shift")
WINDOW_ITEMS = ("flags", *FORMULA_FIELDS, "tsc")
TSC_MNEMONICS = {"rdtsc", "rdtscp"}
#: Verdicts from best to worst; a field's verdict is its worst over all paths.
SEVERITY = [
    "inside",
    "present",
    "not-read",
    "stale-on-retry",
    "before-window",
    "after-recheck",
    "missing",
]
#: Paths explored before giving up (the bundled readers need a few hundred).
PATH_BUDGET = 500_000

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


def decode_function(data: bytes, symbol: str = BLOB_ENTRY, name: str = "image") -> list[Insn]:
    """The instructions of function `symbol` of ELF `data`, in address order."""
    elf = open_elf(data, name)
    bits = elf.elfclass
    funcs, names = _functions(elf)
    if symbol not in funcs:
        raise WindowError(f"{name}: no function symbol {symbol}")
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
        raise WindowError(f"{name}: {symbol} is not in a loaded segment")
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
        if insn.target == insn.next_addr:
            new["push"] = (insn.next_addr, 1)
        elif insn.target_name and insn.target_name.startswith("__x86.get_pc_thunk."):
            new[insn.target_name.rsplit(".", 1)[1]] = (insn.next_addr, 1)
        else:
            for reg in CALL_CLOBBERS:
                new.pop(reg, None)
        return new
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


# ------------------------------------------------------------------------ path analysis

_PVTI0 = BLOB_PAGES["pvclock"]  # vCPU 0's record starts the page


def events_of(insn: Insn, state: State, bits: int) -> list[str]:
    """The vCPU 0 pvti fields an instruction loads, and "tsc" for a TSC read."""
    found = ["tsc"] if insn.mnemonic in TSC_MNEMONICS else []
    if insn.mnemonic in ("lea", "call", "jmp"):  # address arithmetic, branch targets
        return found
    for operand in insn.operands:
        value = mem_address(operand, state, bits)
        if value is None or value[1] != 1:
            continue
        field = pvti_field_at(to_signed(value[0], bits) - _PVTI0)
        if field is not None:
            found.append(field.name)
    return found


def returns_u64_max(state: State, bits: int) -> bool:
    """Whether the return registers hold the constant U64_MAX at a `ret`."""
    if bits == 64:
        return state.get("ax") == (-1, 0)
    return state.get("ax") == (-1, 0) and state.get("dx") == (-1, 0)


PathItem = tuple[int, tuple[str, ...], tuple[tuple[int, int], ...], State]


def enumerate_paths(insns: list[Insn], bits: int) -> Iterator[tuple[tuple[str, ...], bool]]:
    """(events, returns U64_MAX) of every entry-to-`ret` path, backward branches taken <= 2x.

    The abstract state is carried along each path, so addresses and return values are
    exact for that path.  Paths leaving the function (tail call to the syscall fallback)
    are not returned.
    """
    index = {insn.addr: i for i, insn in enumerate(insns)}
    seen: set[tuple[tuple[str, ...], bool]] = set()
    stack: list[PathItem] = [(insns[0].addr, (), (), {})]
    budget = PATH_BUDGET
    while stack:
        budget -= 1
        if budget == 0:
            raise WindowError("window analysis: too many paths")
        addr, trail, back, state = stack.pop()
        insn = insns[index[addr]]
        trail = trail + tuple(events_of(insn, state, bits))
        if insn.mnemonic.startswith("ret"):
            key = (trail, returns_u64_max(state, bits))
            if key not in seen:
                seen.add(key)
                yield key
            continue
        out = transfer(insn, state, bits)
        for succ in successors(insn, index):
            edge = (addr, succ)
            if succ <= addr and back.count(edge) >= 2:
                continue
            stack.append((succ, trail, back + (edge,) if succ <= addr else back, out))


def classify_path(trail: tuple[str, ...]) -> dict[str, str]:
    """Where each window item's last load sits on one path that returns a time."""
    versions = [i for i, ev in enumerate(trail) if ev == "version"]
    iterations = len(versions) // 2 if len(versions) >= 2 else 1
    if len(versions) >= 2:
        opening, closing = versions[-2], versions[-1]
    else:
        opening, closing = (versions[-1] if versions else -1), len(trail)
    result = {}
    for item in WINDOW_ITEMS:
        positions = [i for i, ev in enumerate(trail) if ev == item]
        if not positions:
            result[item] = "not-read"
            continue
        last = positions[-1]
        if last > closing:
            result[item] = "after-recheck"
        elif last < opening:
            result[item] = "before-window" if iterations == 1 else "stale-on-retry"
        else:
            result[item] = "inside"
    result["recheck"] = "present" if len(versions) >= 2 else "missing"
    return result


def analyse_window(data: bytes, name: str = "image") -> dict[str, str]:
    """Per field: 'inside' the version window, or how the compiled code leaves it."""
    insns = decode_function(data, BLOB_ENTRY, name)
    if not insns:
        raise WindowError(f"{name}: {BLOB_ENTRY} decodes to no instructions")
    bits = 64 if data[4] == 2 else 32  # EI_CLASS
    verdict: dict[str, str] = {}
    for trail, gives_up in enumerate_paths(insns, bits):
        if gives_up or "version" not in trail:
            continue  # U64_MAX, or a path that never entered the seqlock
        for item, where in classify_path(trail).items():
            old = verdict.get(item, "inside")
            verdict[item] = max(old, where, key=SEVERITY.index)
    if not verdict:
        raise WindowError(f"{name}: window analysis found no successful path")
    return dict(sorted(verdict.items()))


def window_summary(window: dict[str, str] | None) -> str:
    """One sentence for the manifest notes from the window analysis."""
    if window is None:
        return ""
    out = {k: v for k, v in window.items() if v not in ("inside", "present")}
    recheck = "" if window.get("recheck") == "present" else " No version re-check."
    out.pop("recheck", None)
    # The wording predates the capstone decoder; kept so committed manifests stay valid.
    if not out:
        return f"objdump: every field load and the TSC read sit inside the version window.{recheck}"
    moved = ", ".join(f"{k} {v}" for k, v in sorted(out.items()))
    return f"objdump: outside the version window: {moved}.{recheck}"
