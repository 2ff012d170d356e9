"""Schedulers: strategies that choose the interleaving, all behind one `Scheduler` interface."""
