"""Account numbers, slots and the ids of transfers and holds, each carrying the slot that routes it."""

from __future__ import annotations

import functools
import re
import secrets
import time
import zlib

from services.common.errors import InvalidArgument

# Accounts hash into this many slots; a slot belongs to exactly one shard at a time.
NUM_SLOTS = 1024
SERIAL_DIGITS = 11
ACCOUNT_NUMBER_LENGTH = 4 + SERIAL_DIGITS + 1

_ACCOUNT_NUMBER = re.compile(r"[0-9]{16}")
_TRANSFER_ID = re.compile(r"T(?P<slot>[0-9]{4})-[0-9a-f]{32}")
_HOLD_ID = re.compile(r"H(?P<slot>[0-9]{4})-[0-9a-f]{32}")


SLOT_DIGITS = 4  # an account number starts with its slot; a transfer or hold id, after its letter


def slot_of_account(number: str) -> int:
    """The slot an account number the bank made carries (checked numbers only: a number from
    outside goes through parse_account_number first)."""
    return int(number[:SLOT_DIGITS])


def slot_of_routed_id(routed_id: str) -> int:
    """The slot a transfer id (T0123-...) or hold id (H0123-...) the bank made carries."""
    return int(routed_id[1 : 1 + SLOT_DIGITS])


def slot_of_customer(customer_id: str) -> int:
    """All the accounts of one customer live in one slot (and so on one shard)."""
    return zlib.crc32(customer_id.encode("utf-8")) % NUM_SLOTS


@functools.lru_cache(maxsize=1 << 17)  # a transfer checks its two numbers about six times on its way
def luhn_check_digit(digits: str) -> int:
    """The Luhn digit that makes `digits + digit` pass the Luhn test."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:  # these are doubled once the check digit is appended
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return (10 - total % 10) % 10


def make_account_number(slot: int, serial: int) -> str:
    assert 0 <= slot < NUM_SLOTS, slot
    assert 0 < serial < 10**SERIAL_DIGITS, serial
    body = f"{slot:04d}{serial:0{SERIAL_DIGITS}d}"
    return body + str(luhn_check_digit(body))


# Account numbers already found valid, with their slots: a transfer's two numbers are checked by
# the router and again by the handler, a batch's thousand on every call, and the check (a
# pattern and a Luhn digit) was 8% of a node's Python on batches. Bounded: emptied when full.
_VALID_ACCOUNTS: dict[str, int] = {}
_VALID_ACCOUNTS_MAX = 1 << 17


def parse_account_number(text: str, field: str = "account_number") -> int:
    """Validates an account number and returns its slot; refuses it before any lookup."""
    slot = _VALID_ACCOUNTS.get(text)
    if slot is not None:
        return slot
    slot = _check_account_number(text, field)
    if len(_VALID_ACCOUNTS) >= _VALID_ACCOUNTS_MAX:
        _VALID_ACCOUNTS.clear()
    _VALID_ACCOUNTS[text] = slot
    return slot


def _check_account_number(text: str, field: str) -> int:
    if not text:
        raise InvalidArgument(field, "required")
    if not _ACCOUNT_NUMBER.fullmatch(text):
        raise InvalidArgument(
            field, f"{text[:40]!r} is not an account number ({ACCOUNT_NUMBER_LENGTH} digits)"
        )
    if luhn_check_digit(text[:-1]) != int(text[-1]):
        raise InvalidArgument(field, f"{text} has a wrong check digit")
    slot = slot_of_account(text)
    if slot >= NUM_SLOTS:
        raise InvalidArgument(field, f"{text} names slot {slot}, beyond the bank's {NUM_SLOTS}")
    return slot


def new_transfer_id(slot: int) -> str:
    """T<slot>-<32 hex digits> (see _growing_with_time)."""
    return f"T{slot:04d}-{_growing_with_time()}"


def new_hold_id(slot: int) -> str:
    """H<slot>-<32 hex digits> (see _growing_with_time)."""
    return f"H{slot:04d}-{_growing_with_time()}"


def _growing_with_time() -> str:
    """32 hex digits: the time in ms (12 digits), then 80 random bits. Ids that grow with time
    land at the end of their table's index instead of on a random page of it, which kept
    PostgreSQL's small cache busy writing pages back."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def parse_transfer_id(text: str, field: str = "transfer_id") -> int:
    """Validates a transfer id and returns the slot of its debited account."""
    return _parse_routed_id(_TRANSFER_ID, text, field, "T0123-<32 hex digits>")


def parse_hold_id(text: str, field: str = "hold_id") -> int:
    return _parse_routed_id(_HOLD_ID, text, field, "H0123-<32 hex digits>")


def _parse_routed_id(pattern: re.Pattern[str], text: str, field: str, shape: str) -> int:
    if not text:
        raise InvalidArgument(field, "required")
    match = pattern.fullmatch(text)
    if match is None:
        raise InvalidArgument(field, f"{text[:48]!r} is not of the form {shape}")
    slot = int(match.group("slot"))
    if slot >= NUM_SLOTS:
        raise InvalidArgument(field, f"{text} names slot {slot}, beyond the bank's {NUM_SLOTS}")
    return slot
