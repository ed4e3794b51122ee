"""A request's fingerprint must not change with how it is computed: digests stored by earlier
versions are compared with new ones when a request id comes back."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from services.storage.idempotency import _canonical, fingerprint


def test_the_canonical_text_is_json_dumps_sorted_for_every_kind_of_value() -> None:
    rng = random.Random(5)
    alphabet = ['"', "\\", "\n", "\t", "\x00", "\x1f", "a", "Z", " ", "é", "元", "\u2028", "😀", "/"]
    payloads: list[dict[str, Any]] = [
        {
            "from": "6222000000000001234",
            "to": "6222000000000005678",
            "amount": 1,
            "currency": "CNY",
            "ref": "",
        },
        {"b": None, "a": True, "c": False, "d": -(2**70), "e": 0},
        {"nested": {"x": 1}, "list": [1, 2]},  # not flat: json.dumps itself
        {"float": 1.5},
        {},
    ]
    for _ in range(300):
        size = rng.randint(1, 6)
        payloads.append(
            {
                "".join(rng.choices(alphabet, k=rng.randint(0, 5))): rng.choice(
                    [
                        "".join(rng.choices(alphabet, k=rng.randint(0, 12))),
                        rng.randint(-(10**20), 10**20),
                        None,
                    ]
                )
                for _ in range(size)
            }
        )
    for payload in payloads:
        assert _canonical(payload) == json.dumps(payload, sort_keys=True), payload


def test_a_transfer_s_fingerprint_is_the_digest_earlier_versions_stored() -> None:
    payload = {"from": "6222000000000001234", "to": "6222000000000005678", "amount": 500, "currency": "CNY",
               "ref": "rent"}  # fmt: skip
    stored = hashlib.sha256(
        json.dumps({"operation": "Transfer", **payload}, sort_keys=True).encode("utf-8")
    ).hexdigest()
    assert fingerprint("Transfer", payload) == stored
