"""The view a host model gets of the run, noting when the model reads the logical time."""

from __future__ import annotations

from host_model.base import HostView


class TimedView(HostView):
    """The view a host model gets, noting when the model reads the logical time.

    A host plans a record (system_time, tsc_timestamp) from `view.t` when it computes the
    step after an update's opening store (host_model/base.py); which host step that read
    follows is what decides where a guest's TSC read stands against the plan
    (emu/search/dependence.py, rule 3), and the models say it only by reading `view.t`.
    """

    #: Set when `t` is read; cleared by the host side before it asks for a step.
    read_t = False

    @property
    def t(self) -> int:
        self.read_t = True
        return self._t

    @t.setter
    def t(self, value: int) -> None:
        self._t = value
