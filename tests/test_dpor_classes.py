"""`dpor` explores every equivalence class: class by class against brute force, and the
same classes whether the search runs whole or split into subtrees.

The outcome comparisons of tests/test_dpor.py project each run to reads-from and verdicts;
these compare the classes themselves (`dpor_trace.class_key` of every run brute force
makes), which is what a single unbounded run once got wrong: a task on a parked vCPU was
raced with the step that resumed it, where it cannot run, and the reversal was dropped,
so every class in which the read runs before the park was lost unless a subtree's fixed
prefix happened to start there (9,101 classes whole, 9,351 in subtrees, on `modern`).
And a bounded search under `xen`, whose reader spins through an update, against brute
force.
"""

from __future__ import annotations

import pytest

from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Scheduler
from emu.search import dpor_siblings
from emu.search.dependence import HOST, Event
from emu.search.dpor import DporStrategy
from emu.search.dpor_checkpoint import subtrees
from emu.search.dpor_sched import DporRun
from emu.search.dpor_trace import Trace, class_key, happens_before, races, run_events
from emu.search.exhaustive import ExhaustiveStrategy
from emu.search.fuzz import Fuzzer
from emu.search.strategy import Result, Strategy
from tests.test_dpor import flagged, outcomes, reads_from, verdicts

_FUZZERS: dict[str, Fuzzer] = {}


def fuzzer(image: str) -> Fuzzer:
    if image not in _FUZZERS:
        sc = Scenario(image=image, host="kvm", host_params={"updates": 1}, vcpus=2, reads=1)
        _FUZZERS[image] = Fuzzer(sc, Executor(sc))
    return _FUZZERS[image]


def classes(c: Fuzzer, strategy: Strategy, returned: bool = True) -> set[int]:
    """The class of every run `strategy` makes (of its returned attempts, or of all)."""
    ex = c.executor
    seen: set[int] = set()

    def run_one(s: Scheduler) -> Result:
        run, _ = c.run(s)
        tr = Trace()
        for e in run_events(run, ex.decider.widths, ex.machine.layout.pages, returned):
            tr.append(e)
        seen.add(class_key(tr.events, tr.hb))
        return Result(False, run.points)

    strategy.explore(run_one, 10**9)
    return seen


def _load(task: int, lo: int, **kw: bool) -> Event:
    return Event(task, "load", task, lo, lo + 4, **kw)


def test_a_parked_task_races_with_the_park_not_the_resume():
    park = Event(HOST, "host", control=frozenset({0}), parks=frozenset({0}))
    write = Event(HOST, "host", writes=((0, 4),))
    resume = Event(HOST, "host", control=frozenset({0}), resumes=frozenset({0}))
    events = [_load(0, 8, first=True), park, write, resume, _load(0, 16, last=True)]
    hb, direct = happens_before(events)
    assert set(direct[4]) == {0, 1, 3}
    found = set(races(events, hb, direct, 0))
    assert (1, 4) in found  # the load can go before the park
    assert (3, 4) not in found  # but not between the park and the resume
    # Even when it reads what the parked stretch wrote: before the park it reads older bytes.
    events[4] = _load(0, 0, last=True)
    hb, direct = happens_before(events)
    assert (1, 4) in set(races(events, hb, direct, 0))
    # A store after the resume that the load reads orders the park before it: the race is
    # with that store (the task is running there), not with the park.
    events = [events[0], park, resume, write, _load(0, 0, last=True)]
    hb, direct = happens_before(events)
    found = set(races(events, hb, direct, 0))
    assert (3, 4) in found and (1, 4) not in found and (2, 4) not in found


def test_unbounded_dpor_explores_every_class_brute_force_finds():
    c = fuzzer("bug-no-retry")
    brute = classes(c, ExhaustiveStrategy(3, reduce=False))
    strat = DporStrategy(None)
    dpor = classes(c, strat)
    assert brute <= dpor
    assert strat.classes == dpor and strat.redundant == 0


def test_retry_assume_explores_every_class_of_returned_attempts():
    """`modern` retries: brute force's runs fall into many more classes of every attempt
    than of the returned ones, and `dpor` makes one complete run per returned class, every
    other run blocked at a retry or by its sleep set."""
    c = fuzzer("modern")
    brute = classes(c, ExhaustiveStrategy(2, reduce=False))
    every = classes(c, ExhaustiveStrategy(2, reduce=False), returned=False)
    strat = DporStrategy(None)
    dpor = classes(c, strat)
    assert brute <= dpor and len(every) > 10 * len(brute)
    assert strat.classes <= dpor and len(strat.classes) == len(dpor)
    assert strat.redundant == 0 and 0 < strat.retried <= strat.blocked
    assert strat.executions == len(strat.classes) + strat.blocked


@pytest.mark.parametrize("first", ["host", "tasks", "last"])
def test_the_classes_do_not_depend_on_the_order_options_are_tried(monkeypatch, first):
    """Any order of trying a decision's options must find every class. Blocking a whole
    run at a retry did not: trying the tasks before the host, a run ended at a task's
    retry before the host's next step showed, so its race was never seen and half of
    `modern`'s classes were lost (4 of 8). Now the retrying task is stuck and the run
    goes on, and the classes are the same whatever the order."""
    c = fuzzer("modern")
    brute = classes(c, ExhaustiveStrategy(2, reduce=False))

    def order(self: DporRun, node: object, agents: tuple[int, ...]) -> list[int]:
        k = list(range(len(agents)))
        if first == "last":
            return k[::-1]
        host = [i for i in k if agents[i] == HOST]
        rest = [i for i in k if agents[i] != HOST]
        return host + rest if first == "host" else rest + host

    monkeypatch.setattr(DporRun, "_order", order)
    strat = DporStrategy(None)
    found = classes(c, strat)
    assert brute <= found and strat.classes == found and strat.complete


def test_subtrees_explore_the_same_classes_as_one_search():
    c = fuzzer("bug-no-retry")
    whole = DporStrategy(None)
    classes(c, whole)

    def probe(s: Scheduler) -> Result:
        run, _ = c.run(s)
        return Result(False, run.points)

    union: set[int] = set()
    for p in subtrees(probe, 2):
        part = DporStrategy(None, prefix=p)
        classes(c, part)
        union |= part.classes
    assert union == whole.classes


@pytest.mark.parametrize("image", ["bug-no-retry", "modern"])
def test_subtrees_start_with_their_earlier_siblings_asleep(image, monkeypatch):
    """A subtree puts the options its earlier siblings take at the split points to sleep
    (emu/search/dpor_siblings.py): the subtrees still explore exactly one search's
    classes, in fewer executions and with fewer classes explored twice than without."""
    c = fuzzer(image)
    whole = DporStrategy(None)
    classes(c, whole)

    def probe(s: Scheduler) -> Result:
        run, _ = c.run(s)
        return Result(False, run.points)

    prefixes = subtrees(probe, 2)

    def split() -> tuple[set[int], int, int]:
        union: set[int] = set()
        runs = found = 0
        for p in prefixes:
            part = DporStrategy(None, prefix=p)
            classes(c, part)
            union |= part.classes
            runs, found = runs + part.executions, found + len(part.classes)
        return union, runs, found

    union, runs, found = split()
    assert union == whole.classes
    # Here no class is explored twice: a prefix that takes an option still asleep from
    # an earlier split point is a subtree one search never enters, and it ends at once.
    assert found == len(union)
    monkeypatch.setattr(dpor_siblings, "asleep", lambda *a: ({}, 0, False))
    alone, runs_alone, found_alone = split()
    assert alone == whole.classes
    assert runs < runs_alone and found < found_alone


@pytest.mark.parametrize(("image", "plain_loses"), [("bug-no-retry", True), ("modern", False)])
def test_bounded_subtrees_start_with_their_cheaper_siblings_asleep(image, plain_loses, monkeypatch):
    """Under a preemption bound a subtree puts to sleep only the earlier siblings that
    cost less at the split point than its own choice (the bounded sleep sets' rule,
    emu/search/dpor.py): with 2 vCPUs x 2 reads at bound 2 the subtrees together see what
    brute force sees, in fewer executions than with no sibling asleep; with every earlier
    sibling asleep they lose a combination of verdicts on `bug-no-retry`."""
    sc = Scenario(image=image, host="kvm", host_params={"updates": 1}, vcpus=2, reads=2)
    c = Fuzzer(sc)
    brute = outcomes(c, ExhaustiveStrategy(2, reduce=False))

    def probe(s: Scheduler) -> Result:
        run, _ = c.run(s)
        return Result(False, run.points)

    prefixes = subtrees(probe, 2)

    def split() -> tuple[set, int]:
        found: set = set()
        runs = 0
        for p in prefixes:
            part = DporStrategy(2, prefix=p)
            found |= outcomes(c, part)
            runs += part.executions
        return found, runs

    found, runs = split()
    assert reads_from(found) == reads_from(brute)
    assert verdicts(found) == verdicts(brute)
    assert flagged(brute) <= flagged(found)
    fixed = DporRun._fixed

    def every_sibling_asleep(self: DporRun, node, agents):  # as without a bound
        k = fixed(self, node, agents)
        self.sleep = {**self.sleep, **node.explored}
        return k

    with monkeypatch.context() as m:
        m.setattr(DporRun, "_fixed", every_sibling_asleep)
        plain, _ = split()
    assert (verdicts(plain) != verdicts(brute)) == plain_loses
    monkeypatch.setattr(dpor_siblings, "asleep", lambda *a: ({}, 0, False))
    alone, runs_alone = split()
    assert reads_from(alone) == reads_from(brute)
    assert runs < runs_alone


@pytest.mark.parametrize("assume_retries", [True, False])
def test_bounded_dpor_under_xen_sees_what_brute_force_sees(assume_retries):
    """Xen keeps the reader's vCPU in guest mode through an update, so a read that starts
    on the odd version spins: `dpor` blocks the run at the retry, or (without retry-assume,
    as under `--speculative-tsc`) spin-blocks the task. A bounded run used to take its
    first affordable option there (the other task, spending the last preemption) instead
    of the free switch to the host the executor's fairness makes: the run blocked, and the
    reads-from patterns in which the host publishes while the first read spins were lost
    at bound 2."""
    c = Fuzzer(Scenario(image="modern", host="xen", vcpus=2, reads=1))
    brute = outcomes(c, ExhaustiveStrategy(2, reduce=False))
    dpor = outcomes(c, DporStrategy(2, assume_retries=assume_retries))
    assert reads_from(dpor) == reads_from(brute)
    assert verdicts(dpor) == verdicts(brute)
    assert flagged(brute) <= flagged(dpor)
    assert dpor <= brute
