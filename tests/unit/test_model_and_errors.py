"""Stored first results come back identical; every domain error maps to one real status code."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import grpc
import pytest

from services.common import errors
from services.common.model import (
    Account,
    Hold,
    HoldCapture,
    MoneyMovement,
    Transfer,
    evolve,
    record_from_json,
    record_to_json,
)

MOMENT = datetime(2026, 11, 29, 4, 30, 12, 345678, tzinfo=UTC)


def sample_transfer() -> Transfer:
    return Transfer(
        "T0001-" + "a" * 32, "r1", "TRANSFER", "0001000000000014", "0002000000000012", 100, "CNY",
        "COMMITTED", "rent", "", "", MOMENT,
    )  # fmt: skip


def test_records_round_trip_through_json() -> None:
    account = Account("0001000000000014", "alice", "CNY", "ACTIVE", 5, 1, 0, 3, 1, MOMENT)
    hold = Hold(
        "H0001-" + "b" * 32, "0001000000000014", "0002000000000012", 9, 0, "CNY", "ACTIVE", MOMENT, ""
    )
    for record in (account, MoneyMovement(sample_transfer(), 42), HoldCapture(hold, sample_transfer())):
        assert record_from_json(record_to_json(record)) == record


def test_every_domain_error_maps_to_one_grpc_status() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.BankError)]
    assert len(classes) >= 10
    for cls in classes:
        assert grpc.StatusCode[cls.status] is not None
        assert cls.retryable == (cls.status in {"UNAVAILABLE", "ABORTED"})
    assert errors.InsufficientFunds.status == "FAILED_PRECONDITION"
    assert not errors.InsufficientFunds.retryable


def test_evolve_is_dataclasses_replace_for_records() -> None:
    original = Transfer("T0001-x", "r", "TRANSFER", "a", "b", 5, "CNY", "COMMITTED", "", "", "", datetime.min)
    changed = evolve(original, created_at=datetime(2026, 1, 2), amount=7)
    assert changed == dataclasses.replace(original, created_at=datetime(2026, 1, 2), amount=7)
    assert hash(changed) == hash(dataclasses.replace(original, created_at=datetime(2026, 1, 2), amount=7))
    assert original.amount == 5 and original.created_at == datetime.min  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.amount = 9  # type: ignore[misc]
    with pytest.raises(TypeError, match="balance"):
        evolve(original, balance=1)
