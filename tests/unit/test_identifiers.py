"""Account numbers carry their slot and a Luhn check digit; ids carry the slot that routes them."""

from __future__ import annotations

import random
import time
import uuid

import pytest

from bankclient import new_request_id
from services.common import identifiers
from services.common.errors import InvalidArgument
from services.common.identifiers import (
    NUM_SLOTS,
    luhn_check_digit,
    make_account_number,
    new_hold_id,
    new_transfer_id,
    parse_account_number,
    parse_hold_id,
    parse_transfer_id,
    slot_of_account,
    slot_of_customer,
)
from services.common.validation import validate_request_id


def test_luhn_matches_known_numbers() -> None:
    # Textbook examples: 7992739871 -> 3, and a well-known test card number.
    assert luhn_check_digit("7992739871") == 3
    assert luhn_check_digit("453201511283036") == 6


def test_account_number_round_trip() -> None:
    number = make_account_number(123, 4567)
    assert len(number) == 16 and number.startswith("0123")
    assert parse_account_number(number) == 123


def test_every_single_digit_error_is_caught() -> None:
    number = make_account_number(77, 987_654_321)
    for position in range(16):
        for digit in "0123456789":
            if digit == number[position]:
                continue
            typo = number[:position] + digit + number[position + 1 :]
            with pytest.raises(InvalidArgument):
                parse_account_number(typo)


def test_adjacent_transpositions_are_mostly_caught() -> None:
    rng = random.Random(7)
    caught = total = 0
    for _ in range(500):
        number = make_account_number(rng.randrange(NUM_SLOTS), rng.randrange(1, 10**11))
        i = rng.randrange(15)
        swapped = number[:i] + number[i + 1] + number[i] + number[i + 2 :]
        if swapped == number:
            continue
        total += 1
        try:
            parse_account_number(swapped)
        except InvalidArgument:
            caught += 1
    # Luhn misses only the 09 <-> 90 swap (and a slot past the end may also be refused).
    assert caught / total > 0.95


@pytest.mark.parametrize("text", ["", "123", "12345678901234567", "abcdefghijklmnop", "0123 4567 8901 23"])
def test_malformed_numbers_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_account_number(text, "to_account")
    assert refused.value.field == "to_account"


def test_slot_beyond_the_bank_is_refused() -> None:
    body = f"{NUM_SLOTS:04d}" + "00000000001"
    with pytest.raises(InvalidArgument, match="slot"):
        parse_account_number(body + str(luhn_check_digit(body)))


def test_customer_slot_is_stable_and_spread() -> None:
    assert slot_of_customer("alice") == slot_of_customer("alice")
    slots = {slot_of_customer(f"customer-{i}") for i in range(5_000)}
    assert len(slots) > NUM_SLOTS * 0.9
    assert all(0 <= s < NUM_SLOTS for s in slots)


def test_transfer_and_hold_ids_carry_their_slot() -> None:
    assert parse_transfer_id(new_transfer_id(5)) == 5
    assert parse_hold_id(new_hold_id(1023)) == 1023
    with pytest.raises(InvalidArgument):
        parse_transfer_id(new_hold_id(5))
    with pytest.raises(InvalidArgument):
        parse_hold_id("H9999-" + "0" * 32)


def test_ids_begin_with_the_time_they_were_made_so_that_they_sort_by_it() -> None:
    """A shard's unique indexes of request, transfer and hold ids take new ids at their end
    (bankclient.new_request_id says why): each id starts with its time, and sorts by it as text."""
    before = time.time_ns() // 1_000_000
    request_ids = [new_request_id() for _ in range(3000)]
    routed = [new_transfer_id(5), new_hold_id(5)]
    after = time.time_ns() // 1_000_000
    assert len(set(request_ids)) == len(request_ids)
    for text in request_ids:
        made = uuid.UUID(text)
        assert (made.version, made.variant) == (7, uuid.RFC_4122)
        assert before <= made.int >> 80 <= after
        assert validate_request_id(text) == text
    for text in routed:
        assert before <= int(text[6:18], 16) <= after
    times_in_text_order = [uuid.UUID(text).int >> 80 for text in sorted(request_ids)]
    assert times_in_text_order == sorted(times_in_text_order)


def test_numbers_found_valid_are_remembered_within_a_bound_and_typos_still_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(identifiers, "_VALID_ACCOUNTS", {})
    monkeypatch.setattr(identifiers, "_VALID_ACCOUNTS_MAX", 8)
    numbers = [make_account_number(slot, 1000 + slot) for slot in range(20)]
    for number in numbers * 2:
        assert parse_account_number(number) == slot_of_account(number)
        assert len(identifiers._VALID_ACCOUNTS) <= 8
    typo = numbers[-1][:-1] + str((int(numbers[-1][-1]) + 1) % 10)
    with pytest.raises(InvalidArgument, match="check digit"):
        parse_account_number(typo, "to_account")
    assert typo not in identifiers._VALID_ACCOUNTS


def test_the_slot_read_from_an_id_is_the_slot_it_was_made_with() -> None:
    for slot in (0, 7, 341, NUM_SLOTS - 1):
        number = make_account_number(slot, 12345)
        assert identifiers.slot_of_account(number) == slot == parse_account_number(number)
        for routed in (identifiers.new_transfer_id(slot), identifiers.new_hold_id(slot)):
            assert identifiers.slot_of_routed_id(routed) == slot
    assert identifiers.slot_of_routed_id(identifiers.new_transfer_id(12)) != 21
