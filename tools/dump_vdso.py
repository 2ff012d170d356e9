"""Dump this machine's running vDSO, its clock-page layout and live pvti into a directory.

Usage: python tools/dump_vdso.py DIR   (the same as `vdsofuzz dump-vdso DIR`)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emu.errors import UsageError  # noqa: E402
from emu.image.dump import dump_meta, dump_running_vdso  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path, help="directory to write (created if missing)")
    args = ap.parse_args(argv)
    try:
        out = dump_running_vdso(args.dest)
    except (UsageError, OSError) as e:
        print(f"dump-vdso: {e}", file=sys.stderr)
        return 2
    meta = dump_meta(out)
    print(f"dumped {meta['kernel_release']} vDSO ({meta['vdso']['size']} bytes) to {out}")
    for name, m in sorted(meta["mappings"].items()):
        print(f"  {name:14} at vdso{m['offset']:+#x}, {m['size'] // 4096} page(s)")
    if "layout" in meta:
        print(f"  layout: {meta['layout']['profile']} ({meta['layout']['source']})")
    else:
        print(f"  layout: unknown ({meta.get('layout_error')})")
    for rec in meta.get("clock_records", []):
        print(f"  clock record {rec['cs']}: clock_mode {rec['clock_mode_name']}")
    if meta.get("pvti"):
        print("  pvti (vCPU 0): " + json.dumps(meta["pvti"], sort_keys=True))
    else:
        print("  no readable pvclock page (not a kvm-clock guest, or never a vDSO clock)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
