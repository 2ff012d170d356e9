"""The lines of a trace: the `Step` record and its text, shared by the whole-run trace,
the streaming one and the folding of loops."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Step:
    """One line of a trace: a guest instruction, a host step, a read's result, or a folded
    loop (`loop`: `where` is its address range, `regs` the registers it changes)."""

    kind: str
    t: int
    who: str
    where: str = ""
    text: str = ""
    regs: dict[str, tuple[int, int]] = field(default_factory=dict)
    mem: list[tuple[str, int]] = field(default_factory=list)
    visible: bool = False
    mark: str = ""
    #: `file:line` from the image's DWARF, when it has any.
    source: str = ""
    #: A folded loop's whole repeats after the first (0 for every other step), and the
    #: instructions of a last repeat it left part-way.
    iterations: int = 0
    partial: int = 0


HEADER = f"{'t':>5}  {'who':<9} {'address':<24} {'instruction':<40} effects"


def line(s: Step) -> str:
    """A step as one line of text."""
    if s.kind == "host":
        return f"{s.t:>5}  {'host':<9} {'':<24} {s.text}"
    if s.kind == "read":
        return f"{s.t:>5}  {s.who:<9} {'':<24} {s.text}{'   <-- ' + s.mark if s.mark else ''}"
    if s.kind == "loop":
        regs = ", ".join(f"{r} {a:#x}->{b:#x}" for r, (a, b) in s.regs.items())
        return f"{s.t:>5}~ {s.who:<9} {s.where}  {s.text}; changing {regs or 'nothing'}"
    eff = [f"{r}={new:#x}" for r, (_, new) in s.regs.items()]
    eff += [f"read {name}={value:#x}" for name, value in s.mem]
    vis = "*" if s.visible else " "
    return f"{s.t:>5}{vis} {s.who:<9} {s.where:<24} {s.text:<40} {' '.join(eff)}".rstrip()


class Printer:
    """Steps to text lines, one at a time: a `; file:line` row before an instruction whose
    source line differs from its task's previous one."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}

    def lines(self, s: Step) -> list[str]:
        out = []
        if s.source and self.last.get(s.who) != s.source:
            out.append(f"{'':>5}  {s.who:<9} {'':<24} ; {s.source}")
            self.last[s.who] = s.source
        out.append(line(s))
        return out
