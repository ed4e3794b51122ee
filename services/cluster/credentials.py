"""The credentials `bankctl up` hands out, under `<home>/credentials/` (owner-only):
`client.token` and `admin.token` for people and tools, and `tokens.json`, the digests with
roles and rate limits that the gateways and bank-nodes check (read again when it changes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from services.cluster.state import ClusterState
from services.rpc.auth import ADMIN, CLIENT, PEER, identity_entry

CREDENTIALS_DIR = "credentials"
TOKENS_FILE = "tokens.json"
DEFAULT_CLIENT_RATE_PER_S = 5000.0  # per client credential; far above what one host sends


def credentials_dir(home: Path) -> Path:
    return home / CREDENTIALS_DIR


def tokens_file(home: Path) -> Path:
    return credentials_dir(home) / TOKENS_FILE


def _write_private(path: Path, text: str) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    partial.touch(mode=0o600)
    partial.chmod(0o600)
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def write_credentials(state: ClusterState, client_rate_per_s: float = DEFAULT_CLIENT_RATE_PER_S) -> Path:
    folder = credentials_dir(state.home)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    secrets = state.secrets
    _write_private(folder / "client.token", secrets["client_token"] + "\n")
    _write_private(folder / "admin.token", secrets["admin_token"] + "\n")
    identities = [
        identity_entry("client", CLIENT, secrets["client_token"], client_rate_per_s),
        identity_entry("admin", ADMIN, secrets["admin_token"]),
        identity_entry("peer", PEER, secrets["peer_token"]),
    ]
    write_identities(state.home, identities)
    return folder


def write_identities(home: Path, identities: list[dict[str, object]]) -> None:
    """Replaces the digests the services check; they notice within about a second."""
    _write_private(tokens_file(home), json.dumps({"identities": identities}, indent=2))


def read_identities(home: Path) -> list[dict[str, object]]:
    return list(json.loads(tokens_file(home).read_text(encoding="utf-8"))["identities"])
