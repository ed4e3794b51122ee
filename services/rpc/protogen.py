"""Generates the Python stubs of proto/bank/v1 (messages, gRPC, mypy stubs) into a folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "bank" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # a build-time tool: only `make proto` and its test need it

    out_dir.mkdir(parents=True, exist_ok=True)
    # The mypy plugins are scripts installed beside this interpreter.
    bin_dir = Path(sys.executable).parent
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
    ]
    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)
    try:
        code = protoc.main(args)
    finally:
        os.chdir(cwd)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    for package in (out_dir / "bank", out_dir / "bank" / "v1"):
        (package / "__init__.py").touch()
    (out_dir / "bank" / "py.typed").touch()


if __name__ == "__main__":
    generate(Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "gen").resolve())
