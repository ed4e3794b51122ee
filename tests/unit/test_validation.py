"""Checks of ids, free text, page sizes and page tokens."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.validation import (
    DEFAULT_PAGE_SIZE,
    decode_page_token,
    encode_page_token,
    validate_customer_id,
    validate_free_text,
    validate_hold_timeout,
    validate_page_size,
    validate_request_id,
)


@pytest.mark.parametrize("bad", ["", "a b", "x" * 129, "tab\there", "é"])
def test_bad_request_ids(bad: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_request_id(bad)
    assert refused.value.field == "request_id"


def test_good_request_ids() -> None:
    for good in ("0b7f2c9e-1f0a-4c55-9a7e-0d5c8e1f3a21", "x" * 128, "order:42/retry"):
        assert validate_request_id(good) == good


def test_customer_ids() -> None:
    assert validate_customer_id("cust-42@bank") == "cust-42@bank"
    for bad in ("", "c" * 65, "a b", "drop;table"):
        with pytest.raises(InvalidArgument):
            validate_customer_id(bad)


def test_free_text_limits() -> None:
    assert validate_free_text("rent for May", "reference", 140) == "rent for May"
    with pytest.raises(InvalidArgument, match="longer than 140"):
        validate_free_text("x" * 141, "reference", 140)
    with pytest.raises(InvalidArgument, match="control"):
        validate_free_text("a\x00b", "reference", 140)


def test_page_sizes() -> None:
    assert validate_page_size(0) == DEFAULT_PAGE_SIZE
    assert validate_page_size(1) == 1 and validate_page_size(1000) == 1000
    for bad in (-1, 1001, 2**31 - 1):
        with pytest.raises(InvalidArgument, match="page_size"):
            validate_page_size(bad)


def test_page_tokens_round_trip_and_forgeries_are_refused() -> None:
    assert decode_page_token("") == 0
    assert decode_page_token(encode_page_token(12345)) == 12345
    for forged in ("abc", "cDE6LTE", "!!!!", "x" * 100, encode_page_token(1)[:-1] + "@"):
        with pytest.raises(InvalidArgument, match="page_token"):
            decode_page_token(forged)


def test_hold_timeouts() -> None:
    assert validate_hold_timeout(0) == 600
    assert validate_hold_timeout(30) == 30
    with pytest.raises(InvalidArgument, match="timeout_seconds"):
        validate_hold_timeout(8 * 24 * 3600)
