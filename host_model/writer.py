"""Store sequences a host uses to publish a new pvti into a vCPU's slot of the pvclock page.

`seqlock_update` is the correct protocol (KVM since 2016, Xen): version made odd, body
stored field by field, version made even. `legacy_copy` is KVM's behaviour before that
fix: the version is bumped by two in the host's copy, then the whole struct is copied in
memory order, so the version the guest sees is never odd. Each is a `StoreProtocol`: its
opening store depends only on the published record, so `planned`/`republish` compute the
new record only once the opening has been taken (the rule in `host_model.base`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache, wraps

from host_model.base import HostStep, HostView, PageWrite, Publish
from host_model.clock import NS_PER_S, Clock
from host_model.pvti import (
    BODY_FIELDS,
    FIELD_BY_NAME,
    FIELDS,
    PVCLOCK_TSC_STABLE_BIT,
    PVTI_SLOT,
    Pvti,
    time_scale,
)


def slot_key(vcpu: int) -> str:
    return f"pvti{vcpu}"


def store(vcpu: int, name: str, old: Pvti, new: Pvti) -> PageWrite:
    """One store of field `name` of vCPU `vcpu`'s pvti, from `old`'s value to `new`'s."""
    f = FIELD_BY_NAME[name]
    return PageWrite(
        page="pvclock",
        offset=vcpu * PVTI_SLOT + f.offset,
        data=new.field_bytes(name),
        label=f"vcpu{vcpu}.{name}",
        old=getattr(old, name),
        new=getattr(new, name),
    )


def snapshot(clock: Clock, vcpu: int, t: int, version: int, stable: bool = True) -> Pvti:
    """The pvti a host computes for `vcpu` at step `t`: (TSC now, true time now, scale)."""
    shift, mul = time_scale(clock.hz(vcpu, t), NS_PER_S)
    return Pvti(
        version=version,
        tsc_timestamp=clock.tsc(vcpu, t),
        system_time=clock.ns(t),
        tsc_to_system_mul=mul,
        tsc_shift=shift,
        flags=PVCLOCK_TSC_STABLE_BIT if stable else 0,
    )


def initial_writes(pvtis: list[Pvti]) -> HostStep:
    """The zero-time step that puts every vCPU's first pvti in place before the guest runs."""
    return _initial_writes(tuple(pvtis))


@lru_cache(maxsize=256)
def _initial_writes(pvtis: tuple[Pvti, ...]) -> HostStep:
    # Every run of a scenario boots the same way; the executor also caches the page image
    # by this step, so the same records must give the same (identical) step.
    writes = []
    for v, p in enumerate(pvtis):
        blank = Pvti()
        writes += [store(v, f.name, blank, p) for f in FIELDS if f.name not in ("pad0", "pad")]
    return HostStep(
        "boot: pages initialised",
        writes=tuple(writes),
        publish=tuple(Publish(slot_key(v), p) for v, p in enumerate(pvtis)),
    )


def _step(w: PageWrite, publish: tuple[Publish, ...] = ()) -> HostStep:
    return HostStep(f"{w.label} {w.old:#x} -> {w.new:#x}", writes=(w,), publish=publish)


@dataclass(frozen=True)
class StoreProtocol:
    """How a host stores a new pvti over an old one, in two parts.

    `opening(vcpu, old)` is the first store; it depends only on the published record, so a
    host can take it before it knows the new one. `sequence(vcpu, old, new)` is the whole
    store sequence, its first step equal to the opening.
    """

    opening: Callable[[int, Pvti], HostStep]
    sequence: Callable[[int, Pvti, Pvti], Iterator[HostStep]]


def _reused(
    protocol: Callable[[int, Pvti, Pvti], Iterator[HostStep]],
) -> Callable[[int, Pvti, Pvti], Iterator[HostStep]]:
    """`protocol` with its steps kept: they depend only on (vcpu, old, new), and a host
    republishes the same records at the same logical times across runs (steps are
    immutable, so sharing them is invisible)."""
    steps = lru_cache(maxsize=4096)(lambda vcpu, old, new: tuple(protocol(vcpu, old, new)))

    @wraps(protocol)
    def cached(vcpu: int, old: Pvti, new: Pvti) -> Iterator[HostStep]:
        return iter(steps(vcpu, old, new))

    return cached


@lru_cache(maxsize=1024)
def seqlock_opening(vcpu: int, old: Pvti) -> HostStep:
    """version = (version + 1) | 1: the store that tells readers an update is under way."""
    return _step(store(vcpu, "version", old, old.with_(version=(old.version + 1) | 1)))


@_reused
def seqlock_update(vcpu: int, old: Pvti, new: Pvti) -> Iterator[HostStep]:
    """version = (version + 1) | 1; body; version += 1 — each store a separate step."""
    odd = old.with_(version=(old.version + 1) | 1)
    yield seqlock_opening(vcpu, old)
    cur = odd
    for name in BODY_FIELDS:
        nxt = cur.with_(**{name: getattr(new, name)})
        if getattr(nxt, name) != getattr(cur, name):
            yield _step(store(vcpu, name, cur, nxt))
        cur = nxt
    final = new.with_(version=odd.version + 1)
    yield _step(store(vcpu, "version", cur, final), (Publish(slot_key(vcpu), final),))


@lru_cache(maxsize=1024)
def legacy_opening(vcpu: int, old: Pvti) -> HostStep:
    """The copy's first store: the version, already bumped by two."""
    return _step(store(vcpu, "version", old, old.with_(version=old.version + 2)))


@_reused
def legacy_copy(vcpu: int, old: Pvti, new: Pvti) -> Iterator[HostStep]:
    """version += 2 in the host's copy, then the whole struct copied field by field in order.

    The guest's first visible change is the new, even version; the body follows. A reader
    that sees the same even version twice can still have read a mix of old and new fields.
    """
    final = new.with_(version=old.version + 2)
    cur = old
    names = [f.name for f in FIELDS if f.name not in ("pad0", "pad")]
    changed = [n for n in names if getattr(final, n) != getattr(old, n)]
    for i, name in enumerate(changed):
        nxt = cur.with_(**{name: getattr(final, name)})
        last = i == len(changed) - 1
        yield _step(store(vcpu, name, cur, nxt), (Publish(slot_key(vcpu), final),) if last else ())
        cur = nxt


SEQLOCK = StoreProtocol(seqlock_opening, seqlock_update)
LEGACY_COPY = StoreProtocol(legacy_opening, legacy_copy)


def planned(
    protocol: StoreProtocol, vcpu: int, old: Pvti, plan: Callable[[], Pvti]
) -> Iterator[HostStep]:
    """`protocol`'s stores of a new record over `old`, the new record computed by `plan()`
    only once the opening store has been taken.

    The executor asks for a host's next step right after taking the previous one and may
    hold it for many guest steps before taking it; the opening does not depend on the new
    record, so the record is planned at the logical time just after the opening ran.
    """
    opening = protocol.opening(vcpu, old)
    yield opening
    steps = tuple(protocol.sequence(vcpu, old, plan()))
    if steps[0].writes != opening.writes:
        raise AssertionError(f"{protocol.sequence.__name__}: first store is not the opening")
    rest = steps[1:]
    if rest:
        yield from rest
    elif steps[0].publish:
        # Only the opening changed anything (the new record equals the old one but for the
        # version): the record is published once the opening is in place.
        yield HostStep(f"vcpu{vcpu} record published", publish=steps[0].publish)


def republish(
    pvtis: list[Pvti],
    vcpu: int,
    view: HostView,
    *,
    stable: bool = True,
    protocol: StoreProtocol = SEQLOCK,
    plan: Callable[[], Pvti] | None = None,
) -> Iterator[HostStep]:
    """Store a new pvti for `vcpu` with `protocol`, step by step; `pvtis[vcpu]` follows
    what the guest can see as published. The new record is `plan()` (default: recomputed
    from the clock), planned once the protocol's opening store has been taken."""
    old = pvtis[vcpu]

    def now() -> Pvti:
        return snapshot(view.clock, vcpu, view.t, old.version, stable=stable)

    if view.writer is not None:
        steps: Iterator[HostStep] = view.writer(vcpu, old, plan or now)
    else:
        steps = planned(protocol, vcpu, old, plan or now)
    for step in steps:
        yield step
        if step.publish:
            pvtis[vcpu] = step.publish[0].snapshot


def round_robin(updates: list[Iterator[HostStep]]) -> Iterator[HostStep]:
    """The steps of several updates interleaved, one step of each in turn (an update that
    has ended drops out). Each update is advanced right after its own step has been taken,
    so whatever it computes after a step (its planned record) it computes at that moment,
    not when another update's step comes up."""
    queue: deque[tuple[HostStep, Iterator[HostStep]]] = deque()
    for it in updates:
        first = next(it, None)
        if first is not None:
            queue.append((first, it))
    while queue:
        step, it = queue.popleft()
        yield step
        nxt = next(it, None)
        if nxt is not None:
            queue.append((nxt, it))
