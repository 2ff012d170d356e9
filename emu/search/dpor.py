"""`dpor`: every interleaving, one execution per equivalence class (dynamic partial-order
reduction over visible operations), re-executing the scenario from the start each time.

Algorithm: source-DPOR with sleep sets (Abdulla, Aronis, Jonsson, Sagonas, JACM 2017,
Algorithm 1, as Nidhugg runs it), stateless. Each run follows a prefix of recorded
choices and then explores afresh (emu/search/dpor_sched.py). After the run, every
reversible race (i, j) among its events (two dependent events of different agents, i
happening before j only through that dependence; emu/search/dependence.py defines
dependence) is reversed: unless some agent that can start v = notdep(i).j at the point
before i is already in that point's backtrack set, one such agent (an *initial*, j's own
agent preferred) is added there. The next run re-explores the deepest point with an agent
left that is not in its sleep set. Without a bound, sleep sets make every complete (not
blocked) run a different class; `canonical` form counting confirms it (the "redundant"
count, which under a bound, where fewer agents sleep, can be more than zero).

A task on a parked vCPU is disabled from the park to the resume: its next event races
with the park (reversed, it runs before the park), not with the resume that enabled it
(emu/search/dpor_trace.py `races`). Racing it with the resume, where it cannot run,
dropped the reversal and lost every class in which a read ran before the park
(tests/test_dpor_classes.py).

Why source sets rather than optimal DPOR's wakeup trees: a wakeup tree must replay the
whole sequence v after the point, which the executor can only do by forcing the choices
of a fresh run; source sets need a single agent per point, the same mechanism
`exhaustive` uses, and with sleep sets the only waste is the blocked runs, which this
strategy counts and reports (they are few on the scenarios measured in the README).

Preemption bound (`--preemptions k`): a run takes no choice that would exceed k
preemptions (counted as `exhaustive` counts them); a reversal too costly where the race
is is added instead at every earlier point where the running agent changed and it fits
(the conservative branches of bounded POR, Coons, Musuvathi, McKinley, OOPSLA 2013). Then
"verified within bound k". Sleep sets under a bound: an agent a explored at a point sleeps
in a later sibling b's subtree only if a cost less there than b (a free, b a preemption).
A run R = p.b.w.e.s of b's subtree that takes a's sleeping event e after w (independent of
e, none of it a's) has the equivalent R' = p.e.b.w.s in a's subtree, and they differ in
three switches: R has x->b, w->a, a->s and R' x->a, a->b, w->s (x the agent before the
point). x->b costs one more than x->a; a->b costs at most one; w->s costs no more than
w->a (w's last agent is as able to run after either). So R' costs no more than R, fits
the bound when R does, and a's subtree explores its class. When a cost as much as b, R'
can cost one more: unconditional sleep sets lost such classes (tests/test_dpor.py has the
case, at bound 2 on `bug-no-retry`). Switching away from a spin-blocked agent is free
towards the fairness rotation's next agent, which the argument does not cover: below a
spin-blocked agent a sleeping agent may run.

Retry loops (emu/search/dpor_spin.py): a retried attempt returns nothing and stores
nothing, so a task that starts a retry is stuck from there (retry-assume, an `assume` in
the sense of GenMC's await reduction): its operations depend on nothing, the run goes on
with the others and counts no class, and its races before the retry are reversed, which
is how the runs where that attempt succeeds are found. The classes are therefore those of
the returned attempts (emu/search/dependence.py), one run per class without a retry in it;
the unbounded search is finite, and on `modern` + `kvm` 2 x 1 it needs 228 runs where
Mazurkiewicz classes of every attempt needed 4,181. With
`--speculative-tsc` a retry's TSC can come from the attempt before, attempts are not
independent, and a task whose last attempt read exactly the stores its previous one read
is only spin-blocked until the host writes (spin-assume). Action points (task migration,
speculative TSC) are explored with every option, and a non-default action empties the
sleep set (it can change any task). After a run's first retry they offer no alternative,
for the reason its races there are not reversed: every run through that point has the
retry and counts no class. Offering them made the unbounded search spend its executions
below retries: on the per-CPU reader with task migration (2 x 2 reads) it found the ABA
migration bug after 195 executions, and not within 10,000 before.
"""

from __future__ import annotations

from pathlib import Path

from emu.engine.scheduler import NEVER
from emu.errors import UsageError
from emu.search import dpor_checkpoint, dpor_siblings
from emu.search.dependence import Event
from emu.search.dpor_checkpoint import Prefix
from emu.search.dpor_sched import DporRun, Node, cost
from emu.search.dpor_trace import Trace, class_key, initials, races
from emu.search.strategy import RunOne, Settings, Strategy

#: Executions between two checkpoint saves (a save costs about one execution).
SAVE_EVERY = 64
#: Stand-in event for an explored option of an action point (it has no event of its own).
_ACTION = Event(-2, "action")


class DporStrategy(Strategy):
    name = "dpor"
    #: Until done: the search is finite.
    default_budget = 10**12

    def __init__(
        self,
        bound: int | None = None,
        *,
        label: str = "dpor",
        checkpoint: Path | None = None,
        prefix: Prefix = (),
        assume_retries: bool = True,
    ) -> None:
        if bound is not None and bound < 0:
            raise UsageError(f"--preemptions must be at least 0, not {bound}")
        super().__init__()
        self.bound = bound
        self.label = label
        #: Where the frontier is saved and resumed from (None: nowhere).
        self.checkpoint = checkpoint
        #: The subtree explored: executions that start with these choices.
        self.prefix = prefix
        #: Retry-assume (emu/search/dpor_spin.py); spin-assume when off.
        self.assume_retries = assume_retries
        self.executions = 0
        self.vcpus = 0
        self.blocked = 0
        #: Runs in which a task retried (among the blocked ones: they count no class).
        self.retried = 0
        self.redundant = 0
        self.classes: set[int] = set()
        self.complete = False
        self.violated = False
        #: The exploration path; a checkpoint saves it (emu/search/dpor_checkpoint.py).
        self.path: list[Node] = []
        #: The latest run's events and happens-before (the next run shares its prefix).
        self.trace = Trace()
        #: A subtree's split points -> the events of the options before its own there.
        self.asleep: dpor_siblings.Asleep = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> DporStrategy:
        return cls(
            settings.preemptions,
            checkpoint=settings.checkpoint,
            assume_retries=settings.assume_retries,
        )

    def explore(self, run_one: RunOne, budget: int) -> None:
        if self.checkpoint is not None:
            self._resume(self.checkpoint)
        try:
            fresh = not self.path and not self.complete
            if self.prefix and fresh and not self._probe(run_one):
                return
            while not self.complete and self.executions < budget:
                more = self.step(run_one)
                if self.checkpoint is not None and (not more or self.executions % SAVE_EVERY == 0):
                    self._save(self.checkpoint)
                if not more:
                    return
        finally:
            self._report(budget)

    def _state(self) -> dict[str, object]:
        return {
            "bound": self.bound,
            "prefix": [list(p) for p in self.prefix],
            "assume_retries": self.assume_retries,
            "executions": self.executions,
            "vcpus": self.vcpus,
            "blocked": self.blocked,
            "retried": self.retried,
            "redundant": self.redundant,
            "complete": self.complete,
            "classes": sorted(self.classes),
        }

    def _save(self, path: Path) -> None:
        if not self.violated:
            dpor_checkpoint.save(path, self._state(), self.path)

    def _resume(self, path: Path) -> None:
        """Continue from the checkpoint at `path`, if there is one."""
        got = dpor_checkpoint.load(path)
        if got is None:
            return
        doc, nodes = got
        mine = self._state()
        for key in ("bound", "prefix", "assume_retries"):
            if doc.get(key) != mine[key]:
                raise UsageError(
                    f"--checkpoint {path} was made with {key} {doc.get(key)!r}, not "
                    f"{mine[key]!r}; use another file or delete it"
                )
        self.executions, self.vcpus = int(doc["executions"]), int(doc["vcpus"])
        self.blocked, self.redundant = int(doc["blocked"]), int(doc["redundant"])
        self.retried = int(doc["retried"])
        self.complete = bool(doc["complete"])
        self.classes = {int(c) for c in doc["classes"]}
        self.path = nodes
        target = nodes[-1].t if nodes else 0
        for n in nodes:
            if not n.action and n.t < target and n.event is not None:
                self.trace.append(n.event)
        self.notes.append(f"{self.label}: resumed from {path} after {self.executions} executions")

    def _probe(self, run_one: RunOne) -> bool:
        """Find what the sibling subtrees' options do at the split points (they sleep here
        from the start: emu/search/dpor_siblings.py); False on a violation."""
        self.asleep, runs, hit = dpor_siblings.asleep(run_one, self.prefix, self.assume_retries)
        self.executions += runs
        self.violated = hit
        return not hit

    def step(self, run_one: RunOne) -> bool:
        """One run from the current path; False when the search is over (done or a hit)."""
        sched = DporRun(
            self.path, self.bound, self.vcpus, dict(self.prefix), self.assume_retries, self.asleep
        )
        res = run_one(sched)
        self.executions += 1
        self.vcpus = sched.vcpus or self.vcpus
        if res.hit:
            self.violated = True
            return False
        if sched.run is None:  # no decision point at all: one interleaving
            self.classes.add(0)
            self.complete = True
            return False
        sched.finish(sched.run)
        self.analyse(sched)
        if not self.advance():
            self.complete = True
            return False
        return True

    def analyse(self, sched: DporRun) -> None:
        """Count the run's class and add the reversals of its new races to the path."""
        assert sched.run is not None
        end = sched.run.steps if sched.blocked_at is None else sched.blocked_at
        trace = self.trace
        trace.truncate(sched.fresh_t)
        for t in range(sched.fresh_t, end):
            e = sched.events.get(t)
            if e is None:
                raise RuntimeError(f"dpor: no event recorded at t={t}")
            trace.append(e)
        events, hb, direct = trace.events, trace.hb, trace.direct
        stuck = sched.stuck_from  # every run through a later point has that task stuck
        if sched.blocked_at is None and stuck == NEVER:
            key = class_key(events, hb)
            if key in self.classes:
                self.redundant += 1
            self.classes.add(key)
        else:
            self.blocked += 1
            self.retried += stuck != NEVER
        at = {n.t: n for n in self.path if not n.action}
        floor = max((n.t for n in self.path if n.fixed), default=-1)
        for i, j in races(events, hb, direct, sched.fresh_t):
            node = at.get(i)
            if node is None or node.point < 0 or node.t <= floor or node.t >= stuck:
                continue
            found = initials(events, hb, i, j)
            have = {node.chosen, *node.backtrack, *node.explored}
            if have.intersection(found):
                continue
            fits = [q for q in found if q in node.options and q not in node.spin]
            if fits:
                self._add(node, fits[0], sched.vcpus)

    def _add(self, node: Node, agent: int, vcpus: int) -> None:
        """Add `agent` to `node`'s backtrack set, or where it fits the bound."""
        if self.bound is None or node.preemptions + cost(node, agent, vcpus) <= self.bound:
            node.backtrack.append(agent)
            return
        at = self.path.index(node)
        nodes = [m for m in self.path[:at] if not m.action]
        for k in range(len(nodes) - 1, 0, -1):
            m = nodes[k]
            if m.fixed:
                return
            if m.point < 0 or agent not in m.options or agent in m.spin:
                continue
            if m.chosen == nodes[k - 1].chosen:
                continue  # not where the running agent changed
            fits = m.preemptions + cost(m, agent, vcpus) <= self.bound
            if fits and agent != m.chosen and agent not in {*m.backtrack, *m.explored}:
                m.backtrack.append(agent)

    def advance(self) -> bool:
        """Move to the deepest node with something left to explore; False if none."""
        path = self.path
        for idx in range(len(path) - 1, -1, -1):
            node = path[idx]
            left = node.pending() if not node.action else _action_left(node)
            if not left:
                continue
            del path[idx + 1 :]
            node.explored[node.chosen] = node.event if node.event is not None else _ACTION
            node.chosen = left[0]
            node.event = None
            return True
        path.clear()
        return False

    def _report(self, budget: int) -> None:
        n, c = self.executions, len(self.classes)
        bound = "none" if self.bound is None else self.bound
        self.stats.update(
            {
                "bound": bound,
                "executions": n,
                "classes": c,
                "blocked": self.blocked,
                "retried": self.retried,
                "redundant": self.redundant,
                "complete": self.complete,
            }
        )
        what = (
            f"{n} execution{'s' if n != 1 else ''} explored, {c} equivalence "
            f"class{'es' if c != 1 else ''}, {self.blocked} blocked ({self.retried} at a retry), "
            f"{self.redundant} redundant"
        )
        scope = "every interleaving" if self.bound is None else f"within bound {self.bound}"
        if self.violated:
            self.notes.append(f"{self.label}: violation after {what}")
        elif self.complete:
            self.notes.append(f"{self.label}: verified: {scope} ({what}); none violates")
        else:
            self.notes.append(
                f"{self.label}: NOT verified: stopped after {what} (budget {budget}) before "
                f"covering {scope}; raise --max-schedules"
            )


def _action_left(node: Node) -> list[int]:
    return [a for a in node.backtrack if a != node.chosen and a not in node.explored]
