"""Instruction-level traces: replay a schedule in stepping mode and print every step.

Each guest instruction shows the task and vCPU, the address as symbol+offset, capstone's
disassembly, the registers it wrote and the shared bytes it read (named by field); host
steps and read results appear where they happened, the violating reads marked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from emu.engine.decode import capstone_for
from emu.engine.executor import Executor
from emu.engine.fields import field_name
from emu.engine.run import HostEvent, Op, Read, Run
from emu.image.lines import read_lines
from emu.oracles import Violation, judge
from emu.report.fold import Folder
from emu.report.steps import HEADER, Printer, Step
from emu.search.replay import Replay
from emu.search.schedule import Schedule

__all__ = ["Step", "Trace", "stream", "trace"]


@dataclass
class Trace:
    header: list[str]
    steps: list[Step]
    run: Run
    violations: list[Violation]

    def text(self) -> str:
        out = [*self.header, HEADER]
        printer = Printer()
        for s in self.steps:
            out += printer.lines(s)
        return "\n".join(out + footer(self.violations)) + "\n"

    def jsonl(self) -> str:
        return "".join(json.dumps(asdict(s), sort_keys=True) + "\n" for s in self.steps)


class _Recorder:
    """The observer a stepping run reports to: turns each host step, read result and guest
    instruction into a trace `Step`, in the order they happen."""

    def __init__(self, executor: Executor, emit: Callable[[Step], None], *, fold: bool) -> None:
        self.executor = executor
        self.image = executor.image
        self.layout = executor.machine.layout
        self.base = self.layout.base
        self.cs = capstone_for(self.image.bits)
        self.lines = read_lines(path=self.image.path)
        self.spec = self.image.vdso_data
        self.last_t = 0
        self.folder: Folder | None = None
        self.emit = emit
        if fold:
            self.folder = Folder(emit, self._insn)
            self.folder.symbolize = lambda pc: self.image.symbolize(pc - self.base)

    def field_name(self, addr: int) -> str:
        """A shared byte named by its clock-record field or page, else its address."""
        return field_name(self.layout, self.spec, addr)

    def __call__(self, kind: str, data: Any) -> object:
        """Take one report of the stepping run; in a folded loop, hand the engine the loop
        body to run unreported (emu/engine/stepping.py)."""
        if kind == "host":
            ev: HostEvent = data
            insns = getattr(ev.step, "insns", ())  # a compiled writer's instructions
            for i, line in enumerate(insns):
                where, _, text = line.partition(": ")
                store = i == len(insns) - 1 and bool(ev.step.writes)
                self._step(Step("writer", ev.t, "host", where=where, text=text, visible=store))
            self._step(Step("host", ev.t, "host", text=ev.step.label))
        elif kind == "read":
            r: Read = data
            shown = r.value if r.value is None else f"{r.value} ({r.value:#x})"
            text = f"{r.label} {r.outcome} {shown}"
            self._step(Step("read", self.last_t, f"t{r.task}", text=text))
        elif kind == "loop" and self.folder is not None:
            self.folder.ran(data[3], data[4], data[5])
        elif self.folder is not None:
            op = data[7]
            self.last_t = op.t if isinstance(op, Op) else data[2]
            self.folder.insn(data)
            return self.folder.body_to_run()
        else:
            step = self._insn(data)
            self.last_t = step.t
            self.emit(step)
        return None

    def _step(self, step: Step) -> None:
        self.last_t = step.t
        if self.folder is not None:
            self.folder.step(step)
        else:
            self.emit(step)

    def close(self) -> None:
        """The run ended: show a loop still being followed (a hang ends inside one)."""
        if self.folder is not None:
            self.folder.flush()

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


def footer(violations: list[Violation]) -> list[str]:
    """The lines after the steps: each violation, or that there is none."""
    if not violations:
        return ["", "no violation"]
    return [""] + [f"VIOLATION {v.oracle}: {v.message}" for v in violations]


def trace(schedule: Schedule, executor: Executor, *, fold: bool = False) -> Trace:
    """Replay `schedule` in stepping mode and collect its trace; `fold`: loops that repeat
    without visible operations become one step each (emu/report/fold.py)."""
    steps: list[Step] = []
    recorder = _Recorder(executor, steps.append, fold=fold)
    run = executor.run(Replay(schedule.choices), observer=recorder)
    recorder.close()
    violations = judge(run, executor.scenario)
    bad = {label for v in violations[:1] for label in v.reads}
    for s in steps:
        if s.kind == "read" and s.text.split(" ", 1)[0] in bad:
            s.mark = violations[0].oracle
    return Trace(header(schedule, executor), steps, run, violations)


def stream(
    schedule: Schedule, executor: Executor, write: Callable[[str], object], *, jsonl: bool = False
) -> list[Violation]:
    """Trace `schedule` with loops folded, writing each line as it comes (text, or JSON
    lines): a hang's trace keeps no steps. The violations, as `judge` gives them."""
    violations = judge(executor.run(Replay(schedule.choices)), executor.scenario)
    bad = {label for v in violations[:1] for label in v.reads}
    printer = Printer()
    if not jsonl:
        write("\n".join([*header(schedule, executor), HEADER]) + "\n")

    def emit(s: Step) -> None:
        if s.kind == "read" and s.text.split(" ", 1)[0] in bad:
            s.mark = violations[0].oracle
        if jsonl:
            write(json.dumps(asdict(s), sort_keys=True) + "\n")
        else:
            write("\n".join(printer.lines(s)) + "\n")

    recorder = _Recorder(executor, emit, fold=True)
    executor.run(Replay(schedule.choices), observer=recorder)
    recorder.close()
    if not jsonl:
        write("\n".join(footer(violations)) + "\n")
    return violations


def header(schedule: Schedule, executor: Executor) -> list[str]:
    """What ran: the image, host, machine and schedule."""
    sc = executor.scenario
    image = executor.image
    return [
        f"image {image.name} ({image.arch}, sha256 {image.sha256[:16]}), "
        f"host {sc.host} {json.dumps(sc.host_params, sort_keys=True)}, "
        f"{sc.vcpus} vCPUs x {sc.reads} reads",
        f"schedule: {schedule.compact()}   (* = visible operation; t = logical time)",
    ]
