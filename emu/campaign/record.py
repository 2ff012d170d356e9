"""The campaign's own record: what it is (`campaign.json`), how it went over time
(`timeline.jsonl`) and which chunks each session handed out (`chunks.jsonl`).

`campaign.json` fixes the product (scenarios, strategies, seeds, chunk size) when the
campaign is created; running the same command again resumes it, and a different spec for
the same DIR is refused. It also carries the campaign time spent in earlier sessions, so
`--time` is the budget of the whole campaign, not of each session.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from emu.campaign.spec import Spec
from emu.campaign.store import atomic_write
from emu.errors import UsageError

FORMAT = "vdsofuzz-campaign/1"


class Record:
    def __init__(self, out: Path, spec: Spec) -> None:
        self.out = out
        self.path = out / "campaign.json"
        if self.path.exists():
            self.data: dict[str, Any] = json.loads(self.path.read_text())
            if self.data.get("format") != FORMAT or self.data.get("digest") != spec.digest:
                raise UsageError(
                    f"{out} holds another campaign (spec {self.data.get('source')!r}); "
                    "give a new --out or the same spec to resume it"
                )
        else:
            out.mkdir(parents=True, exist_ok=True)
            self.data = {
                "format": FORMAT,
                "source": spec.source,
                "digest": spec.digest,
                "chunk": spec.chunk,
                "depth": spec.depth,
                "dpor_depth": spec.dpor_depth,
                "preemptions": spec.preemptions,
                "strategies": list(spec.strategies),
                "seeds": list(spec.seeds),
                "scenarios": [s.to_json() for s in spec.scenarios],
                "expected": {str(k): v for k, v in spec.expected.items()},
                "elapsed": 0.0,
                "sessions": [],
            }
        self.before = float(self.data["elapsed"])
        self.session = len(self.data["sessions"])
        self.started = time.monotonic()
        #: Has this session's record been added (after the workers were warm)?
        self.begun = False

    @property
    def resumed(self) -> bool:
        return self.session > 0

    def elapsed(self) -> float:
        """Campaign time: earlier sessions plus this one."""
        return self.before + time.monotonic() - self.started

    def begin(self, info: dict[str, Any]) -> None:
        """Start this session's clock (after the workers are warm: start-up is not spent
        from the budget)."""
        self.started = time.monotonic()
        self.begun = True
        self.data["sessions"].append(dict(info, started=time.time()))
        self.save()

    def save(self, **session: Any) -> None:
        self.data["elapsed"] = round(self.elapsed(), 3)
        if session and self.begun:
            self.data["sessions"][-1].update(session)
        atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")

    def log(self, name: str, entry: dict[str, Any]) -> None:
        with open(self.out / name, "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
