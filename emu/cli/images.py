"""`images`, `disasm`, `dump-vdso`, `hosts`: what there is to run, and what a reader does."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emu.cli.options import add_cpu


def register(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("images", help="list the bundled reader images")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_images)
    d = sub.add_parser("disasm", help="the reader's code, shared-page loads named by field")
    d.add_argument("image", help="bundled image name or path")
    d.add_argument("--host", default="kvm", help="host model for the annotating run")
    add_cpu(d, "real vDSO: patch .altinstructions for this CPU (default: this machine's)")
    d.set_defaults(func=cmd_disasm)
    dv = sub.add_parser("dump-vdso", help="save this machine's [vdso] image and clock pages")
    dv.add_argument("dir", type=Path, help="directory to write (an image spec afterwards)")
    add_cpu(dv, "check the dump loads with this CPU's alternatives")
    dv.set_defaults(func=cmd_dump_vdso)
    h = sub.add_parser(
        "hosts",
        help="list the host models, where each comes from, and their parameters",
        description="Bundled hosts, then those installed packages add (entry point group "
        "vdsofuzz.hosts), then the host models of any FILE given.",
    )
    h.add_argument(
        "files", nargs="*", metavar="FILE", help="also list the host models of FILE.py[:Class]"
    )
    h.set_defaults(func=cmd_hosts)


def cmd_images(args: argparse.Namespace) -> int:
    from emu.image.loader import manifest

    man = manifest()
    rows = man.get("images", [])
    if args.json:
        print(json.dumps(man, indent=2, sort_keys=True))
        return 0
    if not rows:
        print("no bundled images; build them with `python tools/build_blobs.py`")
        return 0
    short = {v: k for k, v in sorted(man.get("aliases", {}).items(), key=lambda kv: -len(kv[0]))}
    print(f"{'name':<36} {'alias':<22} {'arch':<7} {'gen':<7} seeded bug")
    for e in rows:
        print(
            f"{e['name']:<36} {short.get(e['name'], ''):<22} {e['arch']:<7} "
            f"{str(e.get('generation', '')):<7} {e.get('bug') or '-'}"
        )
    writers = man.get("writers", [])
    if writers:
        walias = {v: k for k, v in man.get("writer_aliases", {}).items()}
        print(f"\n{'writer (--writer)':<36} {'alias':<22} {'in order':<9} protocol")
        for w in writers:
            # Did the compiled stores keep the source's order (from the disassembly)?
            kept = "yes" if w.get("as_written") else "no"
            alias = walias.get(w["name"], "")
            print(f"{w['name']:<36} {alias:<22} {kept:<9} {w.get('protocol', '')}")
    return 0


def cmd_disasm(args: argparse.Namespace) -> int:
    from emu.image.loader import load
    from emu.report.disasm import listing

    sys.stdout.write(listing(load(args.image, cpu=args.cpu), args.host))
    return 0


def cmd_dump_vdso(args: argparse.Namespace) -> int:
    from emu.image.dump import dump_running_vdso
    from emu.image.loader import load

    dest = dump_running_vdso(args.dir)
    image = load(dest, cpu=args.cpu)
    layout = image.layout
    assert layout is not None  # a dump directory always loads as a real vDSO
    pages = ", ".join(f"{k}@{v:#x}" for k, v in sorted(image.pages.items(), key=lambda kv: kv[1]))
    print(
        f"dumped the running kernel's vDSO to {dest}: {image.arch}, entry {image.entry_name}, "
        f"pages {pages}; "
        f"layout from {layout.source} ({layout.profile or 'no profile'}); "
        f"alternatives for --cpu {image.cpu}"
    )
    return 0


def cmd_hosts(args: argparse.Namespace) -> int:
    # host_model is pure Python: listing the hosts starts no emulator.
    from host_model.registry import all_hosts, file_hosts

    sources = all_hosts()
    for spec in args.files:
        sources += file_hosts(spec)
    width = max(len(s.name) for s in sources) + 2
    for src in sources:
        if src.cls is None:
            print(f"{src.name:<{width}} {src.origin}: BROKEN, {src.error}")
            continue
        print(f"{src.name:<{width}} {src.origin}: {src.cls.summary}")
        for p in src.cls.params:
            print(f"    --param {f'{p.name}={p.default}':<22} {p.help} ({p.accepted()})")
    return 0
