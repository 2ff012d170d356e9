"""The README's picture is what the documented command draws now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _docs_images():
    spec = importlib.util.spec_from_file_location("docs_images", ROOT / "tools/docs_images.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_finding_svg_is_what_tools_docs_images_draws():
    tool = _docs_images()
    committed = (ROOT / "docs/finding.svg").read_text(encoding="utf-8")
    assert committed == tool.finding_svg(), "stale: run python tools/docs_images.py"
    assert (
        "![" in (ROOT / "README.md").read_text()
        and "docs/finding.svg" in (ROOT / "README.md").read_text()
    )
