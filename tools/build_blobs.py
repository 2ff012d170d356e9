"""Build the vdsofuzz reader catalog: vDSO-style ELF images from vdso_blobs/src.

Every reader source is compiled for x86-64 and i386 with gcc (GNU ld) and clang
(ld.lld) at -O2 and -Os (the modern reader family also at -O0), linked with
vdso_blobs/vdso.lds into a single-segment, relocation-free shared object, and
checked against the image ABI.  The images go to vdso_blobs/images/<name>.so and
their description to vdso_blobs/manifest.json.  Builds are reproducible: running
the script twice gives byte-identical images and manifest.

    python tools/build_blobs.py            # rebuild everything, rewrite the manifest
    python tools/build_blobs.py --check    # rebuild into a temp dir, compare sha256s

For readers that read vCPU 0's pvti under the version seqlock, the script also
records, per field, whether the loads that feed the returned value stay inside the
version window (manifest `window`); the analysis is `emu.image.window`'s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.constants import P_FLAGS, SH_FLAGS
from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emu.image.window import (  # noqa: E402
    FORMULA_FIELDS,
    WindowError,
    analyse_window,
    window_summary,
)
from host_model.abi import BLOB_ENTRY, BLOB_PAGE_SYMBOLS, PVTI_SLOT  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_writers  # noqa: E402  (tools/ is not a package)

BLOBS = ROOT / "vdso_blobs"
SRC_DIR = BLOBS / "src"
IMAGES_DIR = BLOBS / "images"
MANIFEST = BLOBS / "manifest.json"
LINKER_SCRIPT = BLOBS / "vdso.lds"

ENTRY_SYMBOL = BLOB_ENTRY
#: Page symbols relative to the image's load base (vdso.lds assigns them; host_model.abi says).
PAGE_SYMBOLS = BLOB_PAGE_SYMBOLS

ARCH_FLAGS = {"x86_64": ["-m64"], "i386": ["-m32"]}
ELF_MACHINE = {"x86_64": ("EM_X86_64", 64), "i386": ("EM_386", 32)}
RDTSC_DEFINE = {"lfence": "RDTSC_LFENCE", "rdtscp": "RDTSC_RDTSCP", "rdtsc": "RDTSC_PLAIN"}

CFLAGS = [
    "-std=gnu11",
    "-fPIC",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-strict-aliasing",
    "-fvisibility=hidden",
    "-fno-stack-protector",
    "-fcf-protection=none",
    "-fno-jump-tables",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-mno-sse",
    "-mno-mmx",
    "-Wall",
    "-Wextra",
    "-Werror",
]
LDFLAGS = [
    "-shared",
    "-nostdlib",
    "-Wl,--hash-style=both",
    "-Wl,--build-id=none",
    "-Wl,-Bsymbolic",
    "-Wl,--no-undefined",
    f"-Wl,-T,{LINKER_SCRIPT.relative_to(ROOT)}",
]


@dataclass(frozen=True)
class Toolchain:
    """A compiler driver and the linker it is told to use."""

    compiler: str
    linker: str
    linker_flags: tuple[str, ...]


TOOLCHAINS = {
    "gcc": Toolchain("gcc", "ld", ()),
    "clang": Toolchain("clang", "ld.lld", ("-fuse-ld=lld",)),
}


@dataclass(frozen=True)
class Reader:
    """One catalog entry before arch/compiler/opt expansion."""

    name: str
    source: str
    generation: int | str
    bug: str | None = None
    rdtsc: str = "lfence"
    getcpu: str | None = None
    opts: tuple[str, ...] = ("O2", "Os")
    notes: str = ""
    window_check: bool = True
    bug_needs: str | None = None  # what the emulator must model to observe the bug


MODERN_OPTS = ("O0", "O2", "Os")
READERS = [
    Reader("modern", "modern.c", 3, opts=MODERN_OPTS),
    Reader(
        "modern-rdtscp",
        "modern.c",
        3,
        rdtsc="rdtscp",
        opts=MODERN_OPTS,
        notes="rdtsc_ordered() as patched on CPUs with RDTSCP (ecx gets TSC_AUX).",
    ),
    Reader(
        "modern-rdtsc",
        "modern.c",
        3,
        rdtsc="rdtsc",
        opts=MODERN_OPTS,
        notes="rdtsc_ordered() as patched on CPUs with neither LFENCE_RDTSC nor RDTSCP.",
    ),
    Reader(
        "vcpu0",
        "vcpu0.c",
        2,
        notes="Stable bit checked once before the loop (flags load outside the window by design).",
    ),
    Reader(
        "percpu",
        "percpu.c",
        1,
        getcpu="rdtscp",
        window_check=False,
        notes="pvti slot = 64*(TSC_AUX & 0xfff): at most 64 vCPUs fit the page. Clamps the "
        "result to the u64 at vvar_page+8 (vdso_data.cycle_last); a zero vvar page = no clamp.",
    ),
    Reader(
        "percpu-rdpid",
        "percpu.c",
        1,
        getcpu="rdpid",
        window_check=False,
        notes="percpu with getcpu by rdpid (the vgetcpu alternative on CPUs with RDPID); the "
        "emulator gives rdpid the vCPU number, as TSC_AUX.",
    ),
    Reader(
        "hyperv",
        "hyperv.c",
        "hyperv",
        window_check=False,
        notes="Reads hvclock_page; returns ns100 * 100; U64_MAX while tsc_sequence == 0.",
    ),
    Reader(
        "bug-no-retry",
        "bug-no-retry.c",
        3,
        bug="never re-checks the version: one pass, torn fields are returned",
    ),
    Reader(
        "bug-no-odd-check",
        "bug-no-odd-check.c",
        3,
        bug="uses version instead of version & ~1: an odd, unchanged version is accepted",
    ),
    Reader(
        "bug-no-barrier",
        "bug-no-barrier.c",
        3,
        bug="no read barriers, plain field loads: the compiler may move them out of the window",
    ),
    Reader(
        "bug-unfenced-rdtsc",
        "bug-unfenced-rdtsc.c",
        3,
        rdtsc="rdtsc",
        bug="plain rdtsc (no lfence/rdtscp): the TSC may be read before the version/field loads",
        notes="Compiles to the same instructions as modern-rdtsc wherever same_code_as says so: "
        "the bug lives in the hardware's out-of-order rdtsc, not in the instruction order.",
        bug_needs="an emulator that lets rdtsc take its value before earlier loads complete",
    ),
    Reader(
        "bug-stale-flags",
        "bug-stale-flags.c",
        3,
        bug="flags read once before the loop: a stable bit cleared during a retry goes unnoticed",
    ),
    Reader(
        "bug-hyperv-no-retry",
        "bug-hyperv-no-retry.c",
        "hyperv",
        window_check=False,
        bug="never re-checks tsc_sequence: a read overlapping an update mixes two pages",
    ),
    Reader(
        "bug-percpu-no-recheck",
        "bug-percpu-no-recheck.c",
        1,
        getcpu="rdtscp",
        window_check=False,
        bug="no second getcpu: a task migrated mid-read pairs vCPU A's pvti with vCPU B's TSC",
        notes="Clamps against vvar_page+8 like percpu.",
    ),
]


@dataclass(frozen=True)
class ImageSpec:
    """One image to build: a reader at one arch, compiler and optimisation level."""

    reader: Reader
    arch: str
    compiler: str
    opt: str

    @property
    def name(self) -> str:
        return f"{self.reader.name}-{self.arch}-{self.compiler}-{self.opt}"

    @property
    def source(self) -> str:
        return str((SRC_DIR / self.reader.source).relative_to(ROOT))

    def flags(self) -> list[str]:
        """Compiler and linker flags, without input and output paths."""
        defines = [f"-DRDTSC_VARIANT={RDTSC_DEFINE[self.reader.rdtsc]}"]
        if self.reader.getcpu == "rdpid":
            defines.append("-DGETCPU_RDPID=1")
        toolchain = TOOLCHAINS[self.compiler]
        return [
            *ARCH_FLAGS[self.arch],
            f"-{self.opt}",
            *CFLAGS,
            *defines,
            *toolchain.linker_flags,
            *LDFLAGS,
        ]


def plan() -> list[ImageSpec]:
    """Every image of the catalog, sorted by name."""
    specs = [
        ImageSpec(reader, arch, compiler, opt)
        for reader in READERS
        for arch in ARCH_FLAGS
        for compiler in TOOLCHAINS
        for opt in reader.opts
    ]
    return sorted(specs, key=lambda s: s.name)


def aliases() -> dict[str, str]:
    """Short names: NAME -> NAME-x86_64-gcc-O2, NAME-ARCH -> NAME-ARCH-gcc-O2."""
    table: dict[str, str] = {}
    for reader in READERS:
        table[reader.name] = f"{reader.name}-x86_64-gcc-O2"
        for arch in ARCH_FLAGS:
            table[f"{reader.name}-{arch}"] = f"{reader.name}-{arch}-gcc-O2"
    return dict(sorted(table.items()))


# --------------------------------------------------------------------------- tools


class BuildError(Exception):
    """A compiler, linker or ABI check failed for one image."""


class MissingTool(Exception):
    """A required program is not installed."""


def run(cmd: list[str], cwd: Path = ROOT) -> str:
    """Run a command in a fixed locale; return stdout or raise BuildError."""
    env = {**os.environ, "LC_ALL": "C", "SOURCE_DATE_EPOCH": "0"}
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise MissingTool(cmd[0]) from exc
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def tool_versions(compilers: Iterable[str]) -> dict[str, dict[str, str]]:
    """Version strings of each compiler and the linker it drives."""
    versions = {}
    for name in sorted(set(compilers)):
        toolchain = TOOLCHAINS[name]
        linker = toolchain.linker
        if name == "gcc":
            linker = run(["gcc", "-print-prog-name=ld"]).strip() or "ld"
        versions[name] = {
            "compiler": first_line(run([toolchain.compiler, "--version"])),
            "linker": first_line(run([linker, "--version"])),
        }
    return versions


def require_tools(specs: Iterable[ImageSpec]) -> None:
    """Fail early, with a clear message, if a compiler or linker is missing."""
    needed = {s.compiler for s in specs}
    programs = ["readelf"]
    for name in sorted(needed):
        programs += [TOOLCHAINS[name].compiler, TOOLCHAINS[name].linker]
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        raise MissingTool(", ".join(missing))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def text_sha256(path: Path) -> str:
    """Hash of the .text bytes: equal for images whose machine code is identical."""
    with path.open("rb") as fh:
        text = ELFFile(fh).get_section_by_name(".text")
        return hashlib.sha256(text.data() if text is not None else b"").hexdigest()


# --------------------------------------------------------------------------- build


def compile_image(spec: ImageSpec, out: Path) -> None:
    """Compile and link one image; paths are relative to ROOT and mapped away."""
    cmd = [
        TOOLCHAINS[spec.compiler].compiler,
        *spec.flags(),
        f"-ffile-prefix-map={ROOT}=.",
        "-o",
        str(out),
        spec.source,
    ]
    run(cmd)


def check_relocations(path: Path) -> list[str]:
    text = run(["readelf", "-rW", str(path)])
    if "There are no relocations in this file." in text:
        return []
    return [f"dynamic relocations present:\n{text}"]


def abi_problems(path: Path, arch: str) -> list[str]:
    """Everything in the image that breaks the vdsofuzz image ABI."""
    problems = check_relocations(path)
    with path.open("rb") as fh:
        elf = ELFFile(fh)
        problems += elf_header_problems(elf, arch)
        problems += segment_problems(elf)
        problems += section_problems(elf)
        problems += symbol_problems(elf)
    return problems


def elf_header_problems(elf: ELFFile, arch: str) -> list[str]:
    machine, bits = ELF_MACHINE[arch]
    problems = []
    if elf["e_machine"] != machine or elf.elfclass != bits:
        problems.append(f"ELF is {elf['e_machine']}/{elf.elfclass}, expected {machine}/{bits}")
    if elf["e_type"] != "ET_DYN":
        problems.append(f"ELF type {elf['e_type']}, expected ET_DYN")
    return problems


def segment_problems(elf: ELFFile) -> list[str]:
    loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    if len(loads) != 1:
        return [f"{len(loads)} PT_LOAD segments, expected 1"]
    load = loads[0]
    problems = []
    if load["p_flags"] != P_FLAGS.PF_R | P_FLAGS.PF_X:
        problems.append(f"PT_LOAD flags {load['p_flags']:#x}, expected R+X")
    if load["p_vaddr"] != 0 or load["p_offset"] != 0:
        problems.append("PT_LOAD does not start at vaddr 0 / offset 0")
    return problems


# Sections the dynamic linker format marks writable but that hold only link-time constants.
WRITABLE_OK = {".dynamic", ".got", ".got.plt"}


def section_problems(elf: ELFFile) -> list[str]:
    problems = []
    for section in elf.iter_sections():
        name = section.name
        if section["sh_type"] in ("SHT_REL", "SHT_RELA"):
            problems.append(f"relocation section {name}")
        if name.startswith((".data", ".bss", ".tdata", ".tbss")) and section["sh_size"]:
            problems.append(f"writable data section {name}")
        if section["sh_flags"] & SH_FLAGS.SHF_WRITE and name not in WRITABLE_OK:
            problems.append(f"writable section {name}")
    dynamic = elf.get_section_by_name(".dynamic")
    if dynamic is not None:
        for tag in dynamic.iter_tags():
            if tag.entry.d_tag in ("DT_REL", "DT_RELA", "DT_JMPREL", "DT_TEXTREL", "DT_NEEDED"):
                problems.append(f"dynamic tag {tag.entry.d_tag}")
    return problems


def symbol_problems(elf: ELFFile) -> list[str]:
    problems = []
    dynsym = elf.get_section_by_name(".dynsym")
    symtab = elf.get_section_by_name(".symtab")
    if dynsym is None or symtab is None:
        return ["missing .dynsym or .symtab"]
    entries = dynsym.get_symbol_by_name(ENTRY_SYMBOL) or []
    if not any(
        s["st_info"]["type"] == "STT_FUNC"
        and s["st_info"]["bind"] == "STB_GLOBAL"
        and s["st_shndx"] != "SHN_UNDEF"
        for s in entries
    ):
        problems.append(f"{ENTRY_SYMBOL} is not an exported function")
    undefined = [s.name for s in dynsym.iter_symbols() if s.name and s["st_shndx"] == "SHN_UNDEF"]
    if undefined:
        problems.append(f"undefined dynamic symbols {undefined}")
    mask = (1 << elf.elfclass) - 1
    for name, offset in PAGE_SYMBOLS.items():
        found = symtab.get_symbol_by_name(name) or []
        if not found or found[0]["st_value"] != offset & mask:
            problems.append(f"symbol {name} missing or not at {offset:#x}")
    return problems


@dataclass
class BuiltImage:
    """Result of building one image into a directory."""

    spec: ImageSpec
    path: Path
    sha256: str
    size: int
    window: dict[str, str] | None
    text_sha256: str


def build_one(spec: ImageSpec, outdir: Path) -> BuiltImage:
    """Build, ABI-check and analyse one image."""
    out = outdir / f"{spec.name}.so"
    compile_image(spec, out)
    problems = abi_problems(out, spec.arch)
    if problems:
        raise BuildError(f"{spec.name}: ABI violations:\n  " + "\n  ".join(problems))
    try:
        window = analyse_window(out.read_bytes(), spec.name) if spec.reader.window_check else None
    except WindowError as exc:
        raise BuildError(str(exc)) from None
    return BuiltImage(spec, out, sha256(out), out.stat().st_size, window, text_sha256(out))


def build_all(specs: list[ImageSpec], outdir: Path, jobs: int) -> list[BuiltImage]:
    """Build every spec in parallel, printing one progress line per image."""
    results: list[BuiltImage] = []
    width = len(str(len(specs)))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(build_one, spec, outdir): spec for spec in specs}
        for done, future in enumerate(as_completed(futures), 1):
            image = future.result()
            results.append(image)
            print(
                f"[{done:>{width}}/{len(specs)}] {image.spec.name:<40} "
                f"{image.size:>6} bytes  {image.sha256[:16]}",
                flush=True,
            )
    return sorted(results, key=lambda r: r.spec.name)


# ------------------------------------------------------------------------ manifest


def bug_compiled_in(image: BuiltImage) -> bool | None:
    """Whether the seeded bug survived compilation (only bug-no-barrier can vanish)."""
    if image.spec.reader.bug is None:
        return None
    if image.spec.reader.name != "bug-no-barrier":
        return True
    window = image.window or {}
    return any(window.get(f) != "inside" for f in ("flags", *FORMULA_FIELDS, "tsc"))


def manifest_entry(
    image: BuiltImage, versions: dict[str, dict[str, str]], same_code: list[str]
) -> dict[str, object]:
    spec, reader = image.spec, image.spec.reader
    notes = " ".join(n for n in (reader.notes, window_summary(image.window)) if n)
    return {
        "name": spec.name,
        "reader": reader.name,
        "path": f"vdso_blobs/images/{spec.name}.so",
        "source": spec.source,
        "arch": spec.arch,
        "compiler": spec.compiler,
        "compiler_version": versions[spec.compiler]["compiler"],
        "linker": TOOLCHAINS[spec.compiler].linker,
        "linker_version": versions[spec.compiler]["linker"],
        "opt": spec.opt,
        "flags": spec.flags(),
        "sha256": image.sha256,
        "size": image.size,
        "generation": reader.generation,
        "bug": reader.bug,
        "bug_compiled_in": bug_compiled_in(image),
        "bug_needs": reader.bug_needs,
        "rdtsc": reader.rdtsc,
        "getcpu": reader.getcpu,
        "window": image.window,
        "same_code_as": same_code,
        "notes": notes,
    }


def twins(image: BuiltImage, images: list[BuiltImage]) -> list[str]:
    """Other images whose .text is byte-identical to this one's."""
    return sorted(
        other.spec.name
        for other in images
        if other is not image and other.text_sha256 == image.text_sha256
    )


@dataclass
class BuiltWriter:
    """Result of building one host writer into a directory."""

    spec: build_writers.WriterSpec
    path: Path
    sha256: str
    analysis: dict


def build_writer(spec: build_writers.WriterSpec, outdir: Path) -> BuiltWriter:
    """Build one host writer and analyse what it stores (tools/build_writers.py)."""
    out = outdir / f"{spec.name}.so"
    run(build_writers.command(spec, out))
    try:
        analysis = build_writers.analyse(out.read_bytes(), spec.name)
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    return BuiltWriter(spec, out, sha256(out), analysis)


def writer_entries(writers: list[BuiltWriter], versions: dict[str, dict[str, str]]) -> list:
    return [
        build_writers.manifest_entry(w.spec, w.path, w.sha256, w.analysis, versions)
        for w in writers
    ]


def make_manifest(
    images: list[BuiltImage],
    versions: dict[str, dict[str, str]],
    writers: list[BuiltWriter] = (),  # type: ignore[assignment]
) -> str:
    doc = {
        "abi": {
            "entry": f"uint64_t {ENTRY_SYMBOL}(void)",
            "pages": {k: hex(v) for k, v in PAGE_SYMBOLS.items()},
            "pvti_slot_size": PVTI_SLOT,
            "linker_script": str(LINKER_SCRIPT.relative_to(ROOT)),
        },
        "aliases": aliases(),
        "images": [manifest_entry(img, versions, twins(img, images)) for img in images],
        "writer_aliases": build_writers.aliases(),
        "writers": writer_entries(list(writers), versions),
    }
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def load_manifest(path: Path = MANIFEST) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------- modes


def install(images: list[BuiltImage | BuiltWriter], manifest_text: str) -> None:
    """Copy built images and writers into vdso_blobs/images, drop stale ones, write the
    manifest."""
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    wanted = {f"{img.spec.name}.so" for img in images}
    for stale in IMAGES_DIR.glob("*.so"):
        if stale.name not in wanted:
            stale.unlink()
    for img in images:
        shutil.copyfile(img.path, IMAGES_DIR / f"{img.spec.name}.so")
    MANIFEST.write_text(manifest_text)


def compare(images: list[BuiltImage], manifest: dict, subset: bool = False) -> list[str]:
    """Differences between a fresh build and the committed manifest."""
    recorded = {e["name"]: e for e in manifest.get("images", [])}
    built = {img.spec.name: img for img in images}
    problems = []
    if not subset:
        missing = sorted(set(recorded) - set(built))
        problems += [f"{n}: in the manifest but not built" for n in missing]
    problems += [f"{n}: built but not in the manifest" for n in sorted(set(built) - set(recorded))]
    for name in sorted(set(recorded) & set(built)):
        entry, img = recorded[name], built[name]
        if entry["sha256"] != img.sha256:
            problems.append(f"{name}: sha256 {img.sha256} != manifest {entry['sha256']}")
        if entry.get("window") != img.window:
            problems.append(f"{name}: window analysis {img.window} != manifest {entry['window']}")
    return problems


def compare_writers(writers: list[BuiltWriter], manifest: dict) -> list[str]:
    """Differences between freshly built writers and the manifest's (none built: none)."""
    if not writers:
        return []
    recorded = {e["name"]: e for e in manifest.get("writers", [])}
    built = {w.spec.name: w for w in writers}
    problems = [f"{n}: writer not built" for n in sorted(set(recorded) - set(built))]
    problems += [f"{n}: writer not in the manifest" for n in sorted(set(built) - set(recorded))]
    for name in sorted(set(recorded) & set(built)):
        if recorded[name]["sha256"] != built[name].sha256:
            problems.append(f"{name}: sha256 {built[name].sha256} != manifest")
        if recorded[name]["stores"] != built[name].analysis["stores"]:
            problems.append(f"{name}: stores {built[name].analysis['stores']} != manifest")
    return problems


def version_drift(manifest: dict, versions: dict[str, dict[str, str]]) -> list[str]:
    notes = set()
    for entry in manifest.get("images", []):
        now = versions.get(entry["compiler"], {})
        if now and now.get("compiler") != entry["compiler_version"]:
            notes.add(
                f"{entry['compiler']}: manifest built with {entry['compiler_version']!r}, "
                f"found {now['compiler']!r}"
            )
    return sorted(notes)


def select(specs: list[ImageSpec], only: list[str] | None) -> list[ImageSpec]:
    if not only:
        return specs
    table = aliases()
    wanted = {table.get(n, n) for n in only}
    chosen = [s for s in specs if s.name in wanted]
    unknown = wanted - {s.name for s in chosen}
    if unknown:
        raise SystemExit(f"unknown image(s): {', '.join(sorted(unknown))}")
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild into a temporary directory and compare with the manifest",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="with --check: only these images (full names or aliases)",
    )
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only and not args.check:
        print("error: --only is for --check (a full build rewrites the whole manifest)")
        return 2
    specs = select(plan(), args.only)
    try:
        require_tools(specs)
        versions = tool_versions(s.compiler for s in specs)
        with tempfile.TemporaryDirectory(prefix="vdsofuzz-blobs-") as tmp:
            images = build_all(specs, Path(tmp), args.jobs)
            writers = (
                [] if args.only else [build_writer(w, Path(tmp)) for w in build_writers.plan()]
            )
            if args.check:
                return report_check(images, versions, subset=bool(args.only), writers=writers)
            install([*images, *writers], make_manifest(images, versions, writers))
    except MissingTool as exc:
        print(
            f"error: required program(s) not found on PATH: {exc}\n"
            "install the toolchain: apt-get install gcc gcc-multilib clang lld binutils",
            file=sys.stderr,
        )
        return 2
    except BuildError as exc:
        print(f"error: build failed:\n{exc}", file=sys.stderr)
        return 1
    print(
        f"built {len(images)} images into {IMAGES_DIR.relative_to(ROOT)}, "
        f"wrote {MANIFEST.relative_to(ROOT)}"
    )
    return 0


def report_check(
    images: list[BuiltImage],
    versions: dict[str, dict[str, str]],
    subset: bool,
    writers: list[BuiltWriter] = (),  # type: ignore[assignment]
) -> int:
    if not MANIFEST.exists():
        print(f"error: {MANIFEST.relative_to(ROOT)} does not exist", file=sys.stderr)
        return 1
    manifest = load_manifest()
    problems = compare(images, manifest, subset) + compare_writers(writers, manifest)
    if problems:
        print("MISMATCH:\n  " + "\n  ".join(problems), file=sys.stderr)
        for note in version_drift(manifest, versions):
            print(f"note: {note} (different toolchains give different bytes)", file=sys.stderr)
        return 1
    print(f"OK: {len(images)} images match {MANIFEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
