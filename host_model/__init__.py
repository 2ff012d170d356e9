"""Host models: the pvclock math and the hypervisors that rewrite the clock pages.

Nothing here imports `emu`; the emulator imports this package, never the reverse.
"""
