"""Schedulers: strategies that choose the interleaving, all behind one `Scheduler` interface."""

#: Every search strategy `fuzz` accepts; the first is the default. Here, not in fuzz.py, so
#: the CLI's parser can name them without importing the engine.
STRATEGIES = ("hypothesis", "random", "pct", "exhaustive")
