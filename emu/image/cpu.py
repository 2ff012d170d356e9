"""Which CPU the patched image is for: the `--cpu` choices, the features each implies, and the
choice this machine's kernel would make."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from emu.image.altinstr import AltError

#: `--cpu` choices -> the feature names such a CPU has. RDTSCP CPUs also have
#: LFENCE_RDTSC; the order of ALTERNATIVE_2 makes rdtscp win, as on real hardware.
CPU_FEATURES: dict[str, frozenset[str]] = {
    "plain": frozenset(),
    "lfence": frozenset({"X86_FEATURE_LFENCE_RDTSC"}),
    "rdtscp": frozenset({"X86_FEATURE_LFENCE_RDTSC", "X86_FEATURE_RDTSCP"}),
}
CPU_CHOICES = tuple(CPU_FEATURES)


def features_for(cpu: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The feature names a `--cpu` choice implies, plus `extra` (e.g. X86_FEATURE_RDPID)."""
    if cpu not in CPU_FEATURES:
        raise AltError(f"unknown --cpu {cpu!r}: choose one of {', '.join(CPU_CHOICES)}")
    return CPU_FEATURES[cpu] | frozenset(extra)


def cpu_for(feature: str) -> str:
    """The `--cpu` whose patch for a TSC-reading site installs `feature`'s bytes."""
    return "rdtscp" if feature == "X86_FEATURE_RDTSCP" else "lfence"


def default_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The `--cpu` this machine's kernel would pick: rdtscp if the CPU has it; lfence when
    `lfence_rdtsc` is listed or (approximation) the CPU has SSE2, as Linux sets
    X86_FEATURE_LFENCE_RDTSC on Intel with SSE2 and on AMD with a serializing LFENCE;
    otherwise plain."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return "plain"
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if "rdtscp" in flags:
        return "rdtscp"
    if "lfence_rdtsc" in flags or "sse2" in flags:
        return "lfence"
    return "plain"
