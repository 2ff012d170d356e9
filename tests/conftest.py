"""Shared fixtures: bundled images and executors, built once per session."""

from __future__ import annotations

import pytest

from emu.executor import Executor
from emu.scenario import Scenario

_EXECUTORS: dict[tuple, Executor] = {}


def executor_for(image: str, **kw) -> Executor:
    """A cached executor for a scenario (Unicorn engines are costly to create)."""
    key = (image, tuple(sorted((k, str(v)) for k, v in kw.items())))
    if key not in _EXECUTORS:
        _EXECUTORS[key] = Executor(Scenario(image=image, **kw))
    return _EXECUTORS[key]


@pytest.fixture
def make_executor():
    return executor_for
