"""`writer`: the compiled host writer (`--writer`) returns, stores only into its slot, and
does not fault.

A finding against the writer, not the reader: the writer faulted, ran past its instruction
budget, or stored outside the 32-byte pvti it was given (the engine stops it there, see
`emu.engine.writer_agent`). Vacuous without a writer.
"""

from __future__ import annotations

from emu.engine.writer_steps import WriterStep
from emu.oracles.base import Evidence, Violation

NAME = "writer"


def check(ev: Evidence) -> list[Violation]:
    return [
        Violation(NAME, f"the host writer {e.step.error} (host step at t={e.t})", ())
        for e in ev.run.host
        if isinstance(e.step, WriterStep) and e.step.error
    ]
