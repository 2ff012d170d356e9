"""Folding for traces: a loop that repeats without visible operations becomes one line.

A hang is a read that runs its instruction budget (a million by default) without a visible
operation, nearly always in a loop. Printing each instruction gives millions of lines, so
the trace folds: once an invisible instruction's address comes back and the instructions
since then repeat exactly, the repeats are counted, not shown, and one `loop` step says
the address range, the instructions per iteration, the iterations and the registers that
change. Instructions are seen raw (address and registers); only those shown are turned
into trace steps, so a folded loop costs no disassembly and keeps no steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emu.report.steps import Step

#: The longest loop body looked for (instructions): longer ones are printed unfolded.
MAX_BODY = 256

#: What a stepping run reports per instruction (see `emu.engine.stepping`).
Raw = tuple[Any, ...]


class Folder:
    """Takes the raw instructions and the other steps of a trace in order and passes on
    what is shown: unfolded steps, and one `loop` step per folded loop."""

    def __init__(self, emit: Callable[[Step], None], make: Callable[[Raw], Step]) -> None:
        self.emit = emit
        self.make = make
        self.symbolize: Callable[[int], str] = lambda pc: f"{pc:#x}"
        #: The invisible stretch of the current task: pcs in order, and pc -> last index.
        self.pcs: list[int] = []
        self.where: dict[int, int] = {}
        self.who: tuple[int, int] | None = None
        #: A candidate or confirmed loop: its body, position in it and what it has seen.
        self.body: tuple[int, ...] = ()
        self.pos = 0
        self.iterations = 0
        self.pending: list[Raw] = []
        self.changed: dict[str, tuple[int, int]] = {}
        self.first: Raw | None = None
        #: Instructions of a repeat the engine ran unreported and left part-way.
        self.partial = 0

    def step(self, step: Step) -> None:
        """A host step or read result: ends any loop."""
        self.flush()
        self.emit(step)

    def insn(self, raw: Raw) -> None:
        task, vcpu, t, pc, before, after, _reads, op = raw
        who = (task, vcpu)
        if op is not None or who != self.who:
            self.flush()
            self.who = who
            if op is not None:
                self.emit(self.make(raw))
                return
        if self.body:
            if pc == self.body[self.pos]:
                self._follow(raw)
                return
            self.flush()
        i = self.where.get(pc)
        if i is not None and len(self.pcs) - i <= MAX_BODY:
            self.body = tuple(self.pcs[i:])
            self.pos = 0
            self._follow(raw)
            return
        self._show(raw)

    def body_to_run(self) -> tuple[int, ...] | None:
        """The loop body the engine may run unreported from here (a whole repeat has been
        seen and the next instruction starts the next one), else None."""
        if self.body and self.iterations and self.pos == 0:
            return self.body
        return None

    def ran(self, n: int, before: dict[str, int], after: dict[str, int]) -> None:
        """The engine ran `n` instructions of the body unreported (registers before and
        after): whole repeats are counted, a partial one ends the loop."""
        if not self.body:
            return  # a host step or read ended the loop meanwhile: nothing to count
        for r, v in after.items():
            if before[r] != v:
                old = self.changed.get(r, (before[r], v))[0]
                self.changed[r] = (old, v)
        whole, self.partial = divmod(n, len(self.body))
        self.iterations += whole
        self.pending.clear()
        if self.partial:
            self.flush()

    def _follow(self, raw: Raw) -> None:
        """`raw` is the next instruction of the loop body."""
        before, after = raw[4], raw[5]
        self.pending.append(raw)  # shown if the loop breaks off before this repeat ends
        if self.first is None:
            self.first = raw
        for r, v in after.items():
            if before[r] != v:
                old = self.changed.get(r, (before[r], v))[0]
                self.changed[r] = (old, v)
        self.pos += 1
        if self.pos == len(self.body):
            self.pos = 0
            self.iterations += 1
            self.pending.clear()

    def flush(self) -> None:
        """End the loop being followed: one `loop` step for its whole repeats, then the
        instructions of a partial repeat as ordinary steps."""
        if self.body and self.iterations and self.first is not None:
            self.emit(self._loop_step())
        pending = self.pending
        self.body, self.pos, self.iterations, self.partial = (), 0, 0, 0
        self.pending, self.changed, self.first = [], {}, None
        self.pcs.clear()
        self.where.clear()
        for raw in pending:
            self._show(raw)

    def _show(self, raw: Raw) -> None:
        pc = raw[3]
        self.where[pc] = len(self.pcs)
        self.pcs.append(pc)
        self.emit(self.make(raw))

    def _loop_step(self) -> Step:
        assert self.first is not None
        task, vcpu = self.first[0], self.first[1]
        lo, hi = min(self.body), max(self.body)
        n = len(self.body)
        more = f" and {self.partial} of one more" if self.partial else ""
        return Step(
            "loop",
            self.first[2],
            f"t{task}/v{vcpu}",
            f"{self.symbolize(lo)}..{self.symbolize(hi)}",
            f"loop: {self.iterations} more iterations of {n} instruction{'s' * (n > 1)}{more}",
            dict(sorted(self.changed.items())),
            iterations=self.iterations,
            partial=self.partial,
        )
