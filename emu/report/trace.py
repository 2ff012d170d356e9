"""Instruction-level traces: replay a schedule in stepping mode and print every step.

Each guest instruction shows the task and vCPU, the address as symbol+offset, capstone's
disassembly, the registers it wrote and the shared bytes it read (named by field); host
steps and read results appear where they happened, the violating reads marked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from emu.engine.decode import capstone_for
from emu.engine.executor import Executor
from emu.engine.run import HostEvent, Op, Read, Run
from emu.image.lines import read_lines
from emu.oracles import Violation, judge
from emu.search.replay import Replay
from emu.search.schedule import Schedule
from host_model.pages import describe


@dataclass
class Step:
    """One line of a trace: a guest instruction, a host step, or a read's result."""

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


@dataclass
class Trace:
    header: list[str]
    steps: list[Step]
    run: Run
    violations: list[Violation]

    def text(self) -> str:
        out = list(self.header)
        out.append(f"{'t':>5}  {'who':<9} {'address':<24} {'instruction':<40} effects")
        last: dict[str, str] = {}
        for s in self.steps:
            if s.source and last.get(s.who) != s.source:
                out.append(f"{'':>5}  {s.who:<9} {'':<24} ; {s.source}")
                last[s.who] = s.source
            out.append(_line(s))
        if self.violations:
            out.append("")
            for v in self.violations:
                out.append(f"VIOLATION {v.oracle}: {v.message}")
        else:
            out.append("")
            out.append("no violation")
        return "\n".join(out) + "\n"

    def jsonl(self) -> str:
        return "".join(json.dumps(asdict(s), sort_keys=True) + "\n" for s in self.steps)


def _line(s: Step) -> str:
    if s.kind == "host":
        return f"{s.t:>5}  {'host':<9} {'':<24} {s.text}"
    if s.kind == "read":
        return f"{s.t:>5}  {s.who:<9} {'':<24} {s.text}{'   <-- ' + s.mark if s.mark else ''}"
    eff = [f"{r}={new:#x}" for r, (_, new) in s.regs.items()]
    eff += [f"read {name}={value:#x}" for name, value in s.mem]
    vis = "*" if s.visible else " "
    return f"{s.t:>5}{vis} {s.who:<9} {s.where:<24} {s.text:<40} {' '.join(eff)}".rstrip()


def _vdso_field(spec: Any, page: str, offset: int) -> str:
    """`vdso_data[0].seq` for a byte of a real vDSO's clock record, else ''."""
    if spec is None or page != spec.page:
        return ""
    for i, start in enumerate(spec.records):
        rel = offset - start
        if 0 <= rel < spec.size:
            for name, (off, size, count, stride) in spec.fields.items():
                span = size if count == 1 else count * stride
                if off <= rel < off + max(span, 1):
                    sub = f"[{(rel - off) // stride}]" if count > 1 and stride else ""
                    return f"vdso_data[{i}].{name}{sub}"
    return ""


class _Recorder:
    """The observer a stepping run reports to: turns each host step, read result and guest
    instruction into a trace `Step`, in the order they happen."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.image = executor.image
        self.layout = executor.machine.layout
        self.base = self.layout.base
        self.cs = capstone_for(self.image.bits)
        self.lines = read_lines(path=self.image.path)
        self.spec = self.image.vdso_data
        self.steps: list[Step] = []

    def field_name(self, addr: int) -> str:
        """A shared byte named by its clock-record field or page, else its address."""
        hit = self.layout.locate(addr)
        if hit is None:
            return f"{addr:#x}"
        name, off = hit
        return _vdso_field(self.spec, name, off) or describe(name, off)

    def __call__(self, kind: str, data: Any) -> None:
        steps = self.steps
        if kind == "host":
            ev: HostEvent = data
            insns = getattr(ev.step, "insns", ())  # a compiled writer's instructions
            for i, line in enumerate(insns):
                where, _, text = line.partition(": ")
                store = i == len(insns) - 1 and bool(ev.step.writes)
                steps.append(Step("writer", ev.t, "host", where=where, text=text, visible=store))
            steps.append(Step("host", ev.t, "host", text=ev.step.label))
        elif kind == "read":
            r: Read = data
            shown = r.value if r.value is None else f"{r.value} ({r.value:#x})"
            t = steps[-1].t if steps else r.end
            steps.append(Step("read", t, f"t{r.task}", text=f"{r.label} {r.outcome} {shown}"))
        else:
            steps.append(self._insn(data))

    def _insn(self, data: Any) -> Step:
        """One guest instruction's step: disassembly, registers written, shared bytes read."""
        task, vcpu, t, pc, before, after, reads, op = data
        base = self.base
        code = bytes(self.executor.uc.mem_read(pc, 16))
        insn = next(self.cs.disasm(code, pc - base), None)
        text = f"{insn.mnemonic} {insn.op_str}".strip() if insn else "(bad)"
        regs = {r: (before[r], after[r]) for r in after if after[r] != before[r]}
        mem = [(self.field_name(a), int.from_bytes(b, "little")) for a, _, b in reads]
        op_t = op.t if isinstance(op, Op) else t
        return Step(
            "insn",
            op_t,
            f"t{task}/v{vcpu}",
            self.image.symbolize(pc - base),
            text,
            regs,
            mem,
            visible=op is not None,
            source=self.lines.at(pc - base),
        )


def trace(schedule: Schedule, executor: Executor) -> Trace:
    """Replay `schedule` in stepping mode and collect its trace."""
    recorder = _Recorder(executor)
    steps = recorder.steps
    run = executor.run(Replay(schedule.choices), observer=recorder)
    violations = judge(run, executor.scenario)
    bad = {label for v in violations[:1] for label in v.reads}
    for s in steps:
        if s.kind == "read" and s.text.split(" ", 1)[0] in bad:
            s.mark = violations[0].oracle
    sc = executor.scenario
    image = executor.image
    header = [
        f"image {image.name} ({image.arch}, sha256 {image.sha256[:16]}), "
        f"host {sc.host} {json.dumps(sc.host_params, sort_keys=True)}, "
        f"{sc.vcpus} vCPUs x {sc.reads} reads",
        f"schedule: {schedule.compact()}   (* = visible operation; t = logical time)",
    ]
    return Trace(header, steps, run, violations)
