"""The committed stubs in gen/ are exactly what `make proto` generates from proto/."""

from __future__ import annotations

import filecmp
from pathlib import Path

from services.rpc.protogen import REPO, generate


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(REPO / "gen")
        for p in (REPO / "gen").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert fresh == committed, "run `make proto` and commit gen/"
    stale = [str(p) for p in fresh if not filecmp.cmp(tmp_path / p, REPO / "gen" / p, shallow=False)]
    assert stale == [], f"stale stubs {stale}: run `make proto` and commit gen/"
