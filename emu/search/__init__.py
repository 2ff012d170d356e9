"""Schedulers: strategies that choose the interleaving, all behind one `Scheduler` interface
(emu/engine/scheduler.py); `registry` names them."""
