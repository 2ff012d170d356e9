"""The findings directory: one file per signature, holding its smallest finding.

`DIR/findings/<signature id>.json` is a finding file (`vdsofuzz replay` and `trace` read
it) with the signature added. A file is written to a temporary name, fsynced and renamed
over the old one, so a crash leaves either the old or the new file, never half of one, and
one signature never has two files. A finding replaces the stored one only when its schedule
is smaller (fewer choices; ties broken by the schedule text, so any order of arrival ends
with the same file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_write(path: Path, text: str, *, sync: bool = True) -> None:
    """Write `text` to `path` so that a crash leaves the old or the new content.

    With `sync=False` the file is renamed into place unsynced: that already survives the
    death of this process (the kernel keeps the page cache), and `sync(path)` later makes
    it survive a power cut too. The campaign's checkpoints are written so, to hand the
    worker its next chunk before waiting for the disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        if sync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync:
        _sync_dir(path)


def sync(path: Path) -> None:
    """Flush an unsynced `atomic_write` of `path` (its data, then the rename) to disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # replaced again since: the newer write is synced on its own
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _sync_dir(path)


def _sync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)


def _rank(finding: dict[str, Any]) -> tuple[int, str]:
    choices = finding.get("choices", [])
    return len(choices), json.dumps(choices)


class FindingStore:
    def __init__(self, out: Path) -> None:
        self.dir = out / "findings"

    def path(self, sid: str) -> Path:
        return self.dir / f"{sid}.json"

    def load(self) -> dict[str, dict[str, Any]]:
        """Signature id -> stored finding (with its `signature` and `scenario_index`)."""
        out = {}
        if self.dir.is_dir():
            for p in sorted(self.dir.glob("*.json")):
                out[p.stem] = json.loads(p.read_text())
        return out

    def count(self) -> int:
        """Signatures stored."""
        return len(list(self.dir.glob("*.json"))) if self.dir.is_dir() else 0

    def save(
        self, sid: str, signature: dict[str, Any], finding: dict[str, Any], scenario: int
    ) -> bool:
        """Store `finding` under `sid` unless a smaller one is there; True when written."""
        p = self.path(sid)
        if p.exists():
            old = json.loads(p.read_text())
            if _rank(old) <= _rank(finding):
                return False
        d = dict(finding)
        d["signature"] = dict(signature, id=sid)
        d["scenario_index"] = scenario
        atomic_write(p, json.dumps(d, indent=2, sort_keys=True) + "\n")
        return True
