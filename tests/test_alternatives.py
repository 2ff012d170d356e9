"""emu.image.alternatives against real images: the running kernel's vDSO (which the kernel has
already patched for this CPU) and, when present outside the repo, Debian debug vDSOs."""

from __future__ import annotations

import ctypes
import platform
import struct
from pathlib import Path

import pytest
from conftest import DEBIAN, needs_samples

from emu.image.alternatives import (
    CPU_CHOICES,
    P6_NOPS,
    AltError,
    _optimize_nops,
    apply_alternatives,
    default_cpu,
    features_for,
    nops,
    parse_altinstructions,
    site_states,
)
from emu.image.dump import read_maps
from emu.image.layout import elf_facts

RDTSC = b"\x0f\x31"
TSC_NAMES = {"X86_FEATURE_RDTSCP", "X86_FEATURE_LFENCE_RDTSC"}
#: The bytes rdtsc_ordered() has after the kernel patched it for each --cpu.
EXPECTED_TSC_SITE = {
    "plain": RDTSC + P6_NOPS[3],
    "lfence": b"\x0f\xae\xe8\x0f\x31",
    "rdtscp": b"\x0f\x01\xf9" + P6_NOPS[2],
}


@pytest.fixture(scope="module")
def running() -> bytes:
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        pytest.skip("needs a running x86-64 Linux vDSO")
    maps = read_maps()
    if "[vdso]" not in maps:
        pytest.skip("no [vdso] mapping")
    v = maps["[vdso]"]
    return ctypes.string_at(v.start, v.size)


def _tsc_sites(table) -> dict[int, int]:
    """site -> instrlen for sites whose alternatives read the TSC."""
    return {r.site: r.site_len for r in table.records if r.feature_name in TSC_NAMES}


def _unpatch(image: bytes) -> bytes:
    """Put back what the build emitted at each rdtsc_ordered() site: rdtsc + 0x90 padding."""
    table = parse_altinstructions(image)
    buf = bytearray(image)
    for site, length in _tsc_sites(table).items():  # the vDSO is linked at 0: vaddr == offset
        buf[site : site + length] = RDTSC + b"\x90" * (length - 2)
    return bytes(buf)


def test_running_vdso_format_follows_kernel_version(running):
    table = parse_altinstructions(running)
    version = elf_facts(running).kernel_version
    assert table is not None and table.records
    want = 14 if version[:2] >= (6, 3) else 12 if version[:2] >= (5, 13) else 13
    assert table.format.size == want
    # Detection without the version note lands on the same format.
    assert parse_altinstructions(running, use_note=False).format == table.format
    names = {r.feature_name for r in table.records}
    assert {"X86_FEATURE_RDTSCP", "X86_FEATURE_LFENCE_RDTSC"} <= names


def test_running_vdso_holds_what_default_cpu_predicts(running):
    """The kernel patched this image at boot; default_cpu() must name the same choice."""
    cpu = default_cpu()
    held = {
        state
        for site, state in site_states(running)
        if site in _tsc_sites(parse_altinstructions(running))
    }
    want = {
        "rdtscp": "X86_FEATURE_RDTSCP",
        "lfence": "X86_FEATURE_LFENCE_RDTSC",
        "plain": "original",
    }[cpu]
    assert held == {want}


def test_reapplying_the_kernels_choice_reproduces_its_bytes(running):
    """Our patching (replacement + optimize_nops) equals the kernel's, byte for byte."""
    cpu = default_cpu()
    result = apply_alternatives(running, cpu)
    tsc = _tsc_sites(parse_altinstructions(running))
    assert not [p for p in result.patches if p.address in tsc]
    data, patches = result  # tuple-style unpacking
    assert data[: min(tsc)] == running[: min(tsc)]
    # And from the build's original bytes we arrive at what the kernel wrote.
    fresh = apply_alternatives(_unpatch(running), cpu)
    for site, length in tsc.items():
        assert fresh.data[site : site + length] == running[site : site + length]


@pytest.mark.parametrize("cpu", CPU_CHOICES)
def test_each_cpu_choice_on_the_original_bytes(running, cpu):
    original = _unpatch(running)
    result = apply_alternatives(original, cpu)
    tsc = _tsc_sites(parse_altinstructions(original))
    by_site = {p.address: p for p in result.patches}
    for site, length in tsc.items():
        assert result.data[site : site + length] == EXPECTED_TSC_SITE[cpu].ljust(length, b"?")
        p = by_site[site]
        assert p.old == original[site : site + length]
        assert p.new == result.data[site : site + length]
        expect = {
            "plain": "optimize_nops",
            "lfence": "X86_FEATURE_LFENCE_RDTSC",
            "rdtscp": "X86_FEATURE_RDTSCP",
        }[cpu]
        assert p.feature == expect


def test_alternative_2_later_record_wins(running):
    """Swap the two records of one ALTERNATIVE_2 site: now lfence comes last and wins."""
    image = bytearray(_unpatch(running))
    table = parse_altinstructions(bytes(image))
    size = table.format.size
    first = table.records[0]
    pair = [r for r in table.records if r.site == first.site]
    assert [r.feature_name for r in pair] == ["X86_FEATURE_LFENCE_RDTSC", "X86_FEATURE_RDTSCP"]
    alt_base = _section_addr(bytes(image), ".altinstructions")
    a, b = (alt_base + r.index * size for r in pair)
    rec_a, rec_b = bytes(image[a : a + size]), bytes(image[b : b + size])
    # Offsets are relative to each record's own fields: re-base them when moving records.
    image[a : a + size] = _rebase(rec_b, b - a)
    image[b : b + size] = _rebase(rec_a, a - b)
    result = apply_alternatives(bytes(image), "rdtscp")
    assert result.data[first.site : first.site + 5] == EXPECTED_TSC_SITE["lfence"]


def _section_addr(image: bytes, name: str) -> int:
    import io

    from elftools.elf.elffile import ELFFile

    return ELFFile(io.BytesIO(image)).get_section_by_name(name)["sh_addr"]


def _rebase(record: bytes, delta: int) -> bytes:
    instr, repl = struct.unpack_from("<ii", record)
    return struct.pack("<ii", instr + delta, repl + delta) + record[8:]


def test_plain_on_a_kernel_patched_image_is_refused(running):
    with pytest.raises(AltError, match="--cpu"):
        apply_alternatives(running, "plain")


def test_nops_and_optimizer():
    assert [len(n) for n in P6_NOPS] == list(range(9))
    assert nops(11) == P6_NOPS[8] + P6_NOPS[3]
    assert _optimize_nops(b"\x0f\x01\xf9\x90\x90", 0, 64) == b"\x0f\x01\xf9\x66\x90"
    # A 0x90 byte inside an instruction (an immediate) is not a NOP.
    mov = b"\xb8\x90\x90\x90\x90"
    assert _optimize_nops(mov + b"\x90", 0, 32) == mov + b"\x90"


def test_features_and_default_cpu(tmp_path):
    assert features_for("rdtscp") == {"X86_FEATURE_RDTSCP", "X86_FEATURE_LFENCE_RDTSC"}
    with pytest.raises(AltError, match="plain, lfence, rdtscp"):
        features_for("sse9")
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu tsc sse2 rdtscp\n")
    assert default_cpu(info) == "rdtscp"
    info.write_text("flags\t\t: fpu tsc sse2\n")
    assert default_cpu(info) == "lfence"
    info.write_text("flags\t\t: fpu tsc\n")
    assert default_cpu(info) == "plain"


@needs_samples
@pytest.mark.parametrize("path", DEBIAN, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("cpu", CPU_CHOICES)
def test_debian_debug_vdso(path: Path, cpu: str):
    image = path.read_bytes()
    table = parse_altinstructions(image)
    version = elf_facts(image).kernel_version
    assert table.format.size == (14 if version[:2] >= (6, 3) else 12)
    result = apply_alternatives(image, cpu)
    for site, length in _tsc_sites(table).items():
        assert result.data[site : site + length] == EXPECTED_TSC_SITE[cpu]
