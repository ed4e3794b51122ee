"""The runtime's packages never import the launcher's (or the operator tools above it)."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
RUNTIME = [
    "account",
    "common",
    "coordinator",
    "gateway",
    "host",
    "ledger",
    "moves",
    "node",
    "routing",
    "rpc",
    "storage",
]
ABOVE = ("services.cluster", "services.cli", "services.chaos", "services.cost")


def imported_modules(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_runtime_never_imports_the_launcher() -> None:
    upward = [
        f"{path.relative_to(SERVICES.parent)} imports {name}"
        for package in RUNTIME
        for path in sorted((SERVICES / package).rglob("*.py"))
        for name in imported_modules(path)
        if name.startswith(ABOVE)
    ]
    assert upward == []


def test_every_runtime_package_exists() -> None:
    """A renamed package would make the check above pass by looking at nothing."""
    assert [p for p in RUNTIME if not (SERVICES / p / "__init__.py").exists()] == []
