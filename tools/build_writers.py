"""Build the bundled host writers (vdso_blobs/src/writer_*.c) for tools/build_blobs.py.

Each writer is compiled for x86-64 with gcc (GNU ld) and clang (ld.lld) at -O2 and -Os
into `vdso_blobs/images/writer-NAME-x86_64-COMPILER-OPT.so`, a shared object exporting
`vdsofuzz_host_write`. Writers are host code, so unlike the readers they may use SSE: a
struct copy may become 16-byte stores. The manifest's `writers` list records, from what
the compiled writer stores when the emulator runs it over a sample update:

- `stores`: its stores into the slot in order, by field;
- `odd_during_body`: whether every store that changes the body is made while the version
  the reader sees is odd (the seqlock protocol survived compilation);
- `as_written`: for writers whose source is a sequence of field stores, whether the build
  kept that sequence (False: the compiler moved or dropped a store; null: the source copies
  a struct, whose stores are the compiler's choice).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emu.engine.writer_agent import WriterEngine
from emu.image.writer import WRITER_ENTRY, parse_writer
from host_model.abi import PVTI_FIELDS, PVTI_SIZE
from host_model.pvti import PVCLOCK_TSC_STABLE_BIT, Pvti

ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = ROOT / "vdso_blobs" / "src"
BODY = ("tsc_timestamp", "system_time", "tsc_to_system_mul", "tsc_shift", "flags")
SEQLOCK_SOURCE = ("version", *BODY, "version")

WRITER_CFLAGS = [
    "-m64",
    "-std=gnu11",
    "-fPIC",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-strict-aliasing",
    "-fvisibility=hidden",
    "-fno-stack-protector",
    "-fcf-protection=none",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-Wall",
    "-Wextra",
    "-Werror",
]
WRITER_LDFLAGS = [
    "-shared",
    "-nostdlib",
    "-Wl,--hash-style=both",
    "-Wl,--build-id=none",
    "-Wl,--no-undefined",
]
COMPILERS = {"gcc": ("gcc", "ld", ()), "clang": ("clang", "ld.lld", ("-fuse-ld=lld",))}
OPTS = ("O2", "Os")


@dataclass(frozen=True)
class Writer:
    """One bundled writer before compiler/opt expansion."""

    name: str
    source: str
    protocol: str
    #: The stores its source makes, field by field, when it is a sequence of field stores.
    source_stores: tuple[str, ...] | None = None


WRITERS = [
    Writer(
        "writer-seqlock",
        "writer_seqlock.c",
        "correct seqlock: version odd, wmb, body, wmb, version even (KVM since 2016)",
        SEQLOCK_SOURCE,
    ),
    Writer(
        "writer-seed-memcpy",
        "writer_seed_memcpy.c",
        "seed era (KVM before 2016): version += 2 in the host's copy, then one memcpy",
    ),
    Writer(
        "writer-seed-repmovs",
        "writer_seed_repmovs.c",
        "seed era, the copy as the kernel's `rep movsq` memcpy (one store per element)",
    ),
    Writer(
        "writer-no-barrier",
        "writer_no_barrier.c",
        "seqlock stores without barriers on a plain pointer: the compiler may move or drop them",
        SEQLOCK_SOURCE,
    ),
    Writer(
        "writer-xen",
        "writer_xen.c",
        "Xen update_vcpu_system_time: version odd, wmb, whole-struct copy, wmb, version even",
    ),
]


@dataclass(frozen=True)
class WriterSpec:
    writer: Writer
    compiler: str
    opt: str

    @property
    def name(self) -> str:
        return f"{self.writer.name}-x86_64-{self.compiler}-{self.opt}"

    @property
    def source(self) -> str:
        return str((SRC_DIR / self.writer.source).relative_to(ROOT))

    def flags(self) -> list[str]:
        return [f"-{self.opt}", *WRITER_CFLAGS, *COMPILERS[self.compiler][2], *WRITER_LDFLAGS]


def plan() -> list[WriterSpec]:
    specs = [WriterSpec(w, c, o) for w in WRITERS for c in COMPILERS for o in OPTS]
    return sorted(specs, key=lambda s: s.name)


def aliases() -> dict[str, str]:
    """`writer-NAME` -> `writer-NAME-x86_64-gcc-O2`."""
    return {w.name: f"{w.name}-x86_64-gcc-O2" for w in sorted(WRITERS, key=lambda w: w.name)}


def command(spec: WriterSpec, out: Path) -> list[str]:
    return [
        COMPILERS[spec.compiler][0],
        *spec.flags(),
        f"-ffile-prefix-map={ROOT}=.",
        "-o",
        str(out),
        spec.source,
    ]


def _fields(offset: int, size: int) -> list[str]:
    """The pvti fields a store of `size` bytes at `offset` covers, in memory order."""
    return [f.name for f in PVTI_FIELDS if f.offset < offset + size and offset < f.end]


def analyse(data: bytes, name: str) -> dict[str, object]:
    """What the compiled writer stores over a sample update in which every field changes.
    Raises ValueError when it is not a working writer."""
    image = parse_writer(data, name=name)
    slot = 0x3000_1000
    engine = WriterEngine(image, (0x3000_0000, 0x3000_4000))
    old = Pvti(2, 1000, 2000, 0x8000_0000, -1, PVCLOCK_TSC_STABLE_BIT)
    new = Pvti(2, 5000, 9000, 0x9000_0000, 0, PVCLOCK_TSC_STABLE_BIT | 2)
    ex = engine.execute(slot, old.pack(), new.pack())
    if ex.error:
        raise ValueError(f"{name}: {WRITER_ENTRY} {ex.error}")
    final = Pvti.unpack(ex.final)
    if final._replace(version=new.version) != new:
        raise ValueError(f"{name}: the slot holds {final}, not the planned record")
    stores, fields, cur = [], [], bytearray(old.pack())
    odd = True
    for s in ex.stores:
        off = s.offset - (slot - 0x3000_0000)
        covered = _fields(off, len(s.data))
        stores.append(covered[0] if len(covered) == 1 else f"{covered[0]}..{covered[-1]}")
        before = Pvti.unpack(bytes(cur))
        cur[off : off + len(s.data)] = s.data
        after = Pvti.unpack(bytes(cur))
        if before._replace(version=0) != after._replace(version=0) and not after.version & 1:
            odd = False  # a body field changed while the reader sees an even version
        fields.append(tuple(f for f in covered if f not in ("pad0", "pad")))
    assert len(ex.final) == PVTI_SIZE
    return {"stores": stores, "odd_during_body": odd, "fields": fields}


def as_written(writer: Writer, fields: list[tuple[str, ...]]) -> bool | None:
    """Did the build keep the source's field stores, in order, one per statement?"""
    if writer.source_stores is None:
        return None
    return fields == [(f,) for f in writer.source_stores]


def manifest_entry(
    spec: WriterSpec, path: Path, sha: str, analysis: dict[str, object], versions: dict
) -> dict[str, object]:
    fields = analysis["fields"]
    assert isinstance(fields, list)
    return {
        "name": spec.name,
        "kind": "writer",
        "writer": spec.writer.name,
        "path": f"vdso_blobs/images/{spec.name}.so",
        "source": spec.source,
        "arch": "x86_64",
        "compiler": spec.compiler,
        "compiler_version": versions[spec.compiler]["compiler"],
        "linker": COMPILERS[spec.compiler][1],
        "linker_version": versions[spec.compiler]["linker"],
        "opt": spec.opt,
        "flags": spec.flags(),
        "sha256": sha,
        "size": path.stat().st_size,
        "protocol": spec.writer.protocol,
        "stores": analysis["stores"],
        "odd_during_body": analysis["odd_during_body"],
        "as_written": as_written(spec.writer, fields),
    }
