"""vdsofuzz's emulator core: images, the machine, the executor, schedulers, oracles, traces."""

__version__ = "0.1.0"
