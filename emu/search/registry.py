"""Every search strategy by name, the first the default; `make_strategy` builds one.

Each strategy's module is imported when it is first used (Hypothesis takes a while to
import, and `--strategy random` does not need it).
"""

from __future__ import annotations

from importlib import import_module

from emu.errors import UsageError
from emu.search.strategy import Settings, Strategy

#: Strategy name -> "module:class".
_WHERE = {
    "portfolio": "emu.search.portfolio:PortfolioStrategy",
    "hypothesis": "emu.search.hypothesis:HypothesisStrategy",
    "random": "emu.search.random:RandomStrategy",
    "pct": "emu.search.pct:PctStrategy",
    "exhaustive": "emu.search.exhaustive:ExhaustiveStrategy",
    "dpor": "emu.search.dpor:DporStrategy",
}
#: Every strategy name, the default first (the CLI's `--strategy` choices).
STRATEGIES = tuple(_WHERE)
#: What `vdsofuzz fuzz`, `Fuzzer.fuzz` and `emu.api.fuzz` use when no strategy is named.
DEFAULT_STRATEGY = STRATEGIES[0]


def strategy_class(name: str) -> type[Strategy]:
    """The class of strategy `name`."""
    try:
        module, cls = _WHERE[name].split(":")
    except KeyError:
        known = ", ".join(STRATEGIES)
        raise UsageError(f"unknown strategy {name!r}; choose from {known}") from None
    found = getattr(import_module(module), cls)
    assert issubclass(found, Strategy) and found.name == name
    return found


def make_strategy(name: str, settings: Settings) -> Strategy:
    """Strategy `name` set up with `settings`."""
    return strategy_class(name).from_settings(settings)
