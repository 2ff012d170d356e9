"""Which Unicorn releases the engine runs on, and a one-line refusal of any other.

`emu.engine.machine` calls the Unicorn C API through the Python binding's private
internals (`unicorn.unicorn_py3.unicorn.uclib`, `HOOK_CODE_CFUNC`, `uc_hook_h`,
`Uc._uch`, `Uc._hook_exception`): the supported range is the one whose binding has them,
checked here before the engine is built so a different Unicorn fails with a clear message
instead of an AttributeError deep inside a run.
"""

from __future__ import annotations

from importlib import metadata
from types import ModuleType

from emu.errors import UsageError

#: Inclusive lower, exclusive upper bound; keep in step with pyproject.toml's `unicorn` pin.
#: 2.1.0 introduced the `unicorn_py3` binding these internals live in.
SUPPORTED = ((2, 1, 1), (2, 2, 0))
SUPPORTED_TEXT = ">=2.1.1,<2.2"
#: Private names of the binding module the engine uses.
MODULE_NAMES = ("uclib", "HOOK_CODE_CFUNC", "uc_hook_h")
#: Private attributes of a `Uc` the engine uses (the engine handle, the hook error slot).
INSTANCE_NAMES = ("_uch", "_hook_exception")


class UnsupportedUnicorn(UsageError):
    """The installed Unicorn is outside the range the engine supports."""


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit()) or "0"
        parts.append(int(digits))
    return tuple(parts)


def _refuse(found: str) -> UnsupportedUnicorn:
    return UnsupportedUnicorn(
        f"unicorn {found} is not supported: vdsofuzz needs unicorn {SUPPORTED_TEXT} "
        f"(pip install 'unicorn{SUPPORTED_TEXT}')"
    )


def check_version(version: str) -> None:
    """Raise UnsupportedUnicorn unless `version` is in the supported range."""
    lo, hi = SUPPORTED
    if not lo <= _release(version) < hi:
        raise _refuse(version)


def check() -> None:
    """Check the installed Unicorn: its version and the binding internals the engine uses."""
    try:
        version = metadata.version("unicorn")
    except metadata.PackageNotFoundError:
        raise _refuse("(not installed)") from None
    check_version(version)
    try:
        from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
        from unicorn.unicorn_py3 import unicorn as binding
    except ImportError:
        raise _refuse(version) from None
    if not all(hasattr(binding, n) for n in MODULE_NAMES) or not hasattr(Uc, "mem_map_ptr"):
        raise _refuse(version)
    probe = Uc(UC_ARCH_X86, UC_MODE_64)  # the handle attributes exist only on an instance
    if not all(hasattr(probe, n) for n in INSTANCE_NAMES):
        raise _refuse(version)


def load() -> ModuleType:
    """The binding module with the C API handles (`uclib`, ...), after `check`."""
    check()
    from unicorn.unicorn_py3 import unicorn as binding

    return binding
