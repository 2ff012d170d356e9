"""The HostModel protocol: a host is a generator of steps that rewrite the clock pages.

Each `HostStep` is one indivisible host action that the scheduler can place between guest
instructions: one store into a shared page, parking or resuming vCPUs, retuning a TSC.

When values are computed. The executor asks a host for its next step (`next()` on the
generator) right after taking the previous one, at boot included, and may hold that step
for any number of guest steps before taking it. So the rule every model keeps is:

- a step that opens an update depends only on what is already published and on the
  model's parameters, never on `view.t`: the store that makes the version odd (seqlock),
  bumps it by two (legacy copy) or invalidates the sequence (Hyper-V), a park, a retune;
- the update's new record (system_time, tsc_timestamp, the Hyper-V offset, the vdso_data
  anchor) is planned only after the update's first store into that record has been
  taken: the generator computes it when it is resumed for the following step, with
  `view.t` one past the logical time that store ran at (`writer.planned`);
- a host that interleaves the updates of several records (Xen) advances each record's
  generator right after that record's own step is taken (`writer.round_robin`), so each
  record is planned just after its own first store.

A model whose update can leave a record unchanged says so in its docstring (Hyper-V with
`ppm=0` and no TSC change; a vdso_data writer without a seqlock plans its anchor when its
first store is asked for).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from host_model.clock import Clock


class ClockSnapshot(Protocol):
    """A fully published clock record; the consistent oracle evaluates reads against it."""

    @property
    def stable(self) -> bool: ...

    def ns_at(self, tsc: int) -> int: ...


@dataclass(frozen=True)
class PageWrite:
    """Store `data` at byte `offset` of shared page `page`; `label` names the field."""

    page: str
    offset: int
    data: bytes
    label: str
    old: int
    new: int


@dataclass(frozen=True)
class Publish:
    """From this step on, `snapshot` is the current record of clock `key` (e.g. "pvti0")."""

    key: str
    snapshot: Any


@dataclass(frozen=True)
class TscChange:
    vcpu: int
    hz: int | None = None
    jump: int = 0


@dataclass(frozen=True)
class HostStep:
    """One host action; every part is optional."""

    label: str
    writes: tuple[PageWrite, ...] = ()
    publish: tuple[Publish, ...] = ()
    park: frozenset[int] = frozenset()
    unpark: frozenset[int] = frozenset()
    tsc: tuple[TscChange, ...] = ()


@dataclass
class HostView:
    """What a host model may look at when it computes its next step."""

    clock: Clock
    t: int = 0
    vcpus: int = 1
    #: A compiled writer that stores every pvti update instead of the model's own store
    #: protocol: (vcpu, published record, plan) -> its steps (set by the engine's host agent
    #: for `--writer`; see `writer.republish`).
    writer: Any = None


class HostParamError(ValueError):
    """A host parameter the model cannot take (unknown name, wrong type, out of range).

    host_model never imports emu, so this is its own class; the CLI answers it like any
    other bad input (one line, exit 2)."""


@dataclass(frozen=True)
class Param:
    """One host parameter: its default, its type and the values that keep the model meaningful.

    `low`/`high` bound an int (None: unbounded on that side); `choices` lists a str's values.
    """

    name: str
    default: Any
    help: str
    kind: type = int
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()

    def accepted(self) -> str:
        """The accepted values, as the error message and `vdsofuzz hosts` say them."""
        if self.choices:
            return " or ".join(self.choices)
        if self.low is not None and self.high is not None:
            return f"{self.low}..{self.high}"
        if self.low is not None:
            return f"{self.low} or more"
        if self.high is not None:
            return f"{self.high} or less"
        return "any integer" if self.kind is int else f"any {self.kind.__name__}"

    def value(self, host: str, raw: Any) -> Any:
        """`raw` (a CLI string or a JSON value) as this parameter's type, checked."""
        where = f"host {host!r} parameter {self.name}={raw!r}"
        if self.kind is int:
            if isinstance(raw, bool) or not isinstance(raw, (int, str)):
                raise HostParamError(f"{where}: expected an integer ({self.accepted()})")
            try:
                value: Any = raw if isinstance(raw, int) else int(raw, 0)
            except ValueError:
                raise HostParamError(f"{where}: not an integer ({self.accepted()})") from None
            if (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high
            ):
                raise HostParamError(f"{where} is out of range: {self.accepted()}")
            return value
        value = self.kind(raw)
        if self.choices and value not in self.choices:
            raise HostParamError(f"{where}: must be {self.accepted()}")
        return value


class HostModel:
    """Base for host models: subclasses set `name`, `params`, and implement two methods.

    `setup` returns the step that initialises the pages before the guest runs (it is not
    scheduled); `steps` yields the host's actions in order, each taken at a time the
    scheduler chooses.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    #: The shared pages this host writes.
    pages: ClassVar[tuple[str, ...]] = ("pvclock",)

    def __init__(self, **values: Any) -> None:
        known = {p.name: p for p in self.params}
        for key in values:
            if key not in known:
                names = ", ".join(sorted(known)) or "none"
                raise HostParamError(
                    f"host {self.name!r} has no parameter {key!r} (it takes: {names})"
                )
        self.values: dict[str, Any] = {
            p.name: p.value(self.name, values[p.name]) if p.name in values else p.default
            for p in self.params
        }

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    def tsc_offsets(self, vcpus: int) -> tuple[int, ...]:
        """Per-vCPU TSC offsets at boot (cycles); synchronised by default."""
        return (0,) * vcpus

    def setup(self, view: HostView) -> HostStep:
        raise NotImplementedError

    def steps(self, view: HostView) -> Iterator[HostStep]:
        raise NotImplementedError
