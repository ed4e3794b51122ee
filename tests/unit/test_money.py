"""Amounts are exact integers of minor units; decimals are parsed exactly or refused."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.money import (
    MAX_AMOUNT_MINOR,
    format_minor,
    parse_decimal_amount,
    validate_amount_minor,
    validate_currency,
)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.34", "CNY", 1234),
        ("12.3", "CNY", 1230),
        ("12", "CNY", 1200),
        ("0.01", "USD", 1),
        ("12.340000", "EUR", 1234),  # trailing zeros are still exact
        ("1500", "JPY", 1500),
        ("1500.0", "JPY", 1500),
        ("1.234", "BHD", 1234),
        ("10000000000000.00", "CNY", MAX_AMOUNT_MINOR),
    ],
)
def test_exact_decimals_become_minor_units(text: str, currency: str, minor: int) -> None:
    assert parse_decimal_amount(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency", "problem"),
    [
        ("12.345", "CNY", "not a whole number"),
        ("0.5", "JPY", "not a whole number"),
        ("1.2345", "BHD", "not a whole number"),
        ("0", "CNY", "greater than zero"),
        ("0.00", "CNY", "greater than zero"),
        ("10000000000000.01", "CNY", "exceeds"),
        ("9" * 30, "CNY", "exceeds"),
        ("-1", "CNY", "plain decimal"),
        ("+1", "CNY", "plain decimal"),
        ("1e3", "CNY", "plain decimal"),
        ("NaN", "CNY", "plain decimal"),
        ("Infinity", "CNY", "plain decimal"),
        ("1,000.00", "CNY", "plain decimal"),
        (" 1.00", "CNY", "plain decimal"),
        (".5", "CNY", "plain decimal"),
        ("1.", "CNY", "plain decimal"),
        ("", "CNY", "plain decimal"),
        ("\uff11\uff12", "CNY", "plain decimal"),  # full-width digits are not ASCII digits
    ],
)
def test_inexact_or_malformed_decimals_are_refused(text: str, currency: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_decimal_amount(text, currency)
    assert refused.value.field == "amount_decimal"
    assert problem in refused.value.message


@pytest.mark.parametrize("amount", [0, -1, -(2**63), MAX_AMOUNT_MINOR + 1, 2**63 - 1])
def test_minor_amounts_out_of_range_are_refused(amount: int) -> None:
    with pytest.raises(InvalidArgument):
        validate_amount_minor(amount)


def test_minor_amounts_in_range_pass() -> None:
    assert validate_amount_minor(1) == 1
    assert validate_amount_minor(MAX_AMOUNT_MINOR) == MAX_AMOUNT_MINOR


@pytest.mark.parametrize("code", ["", "cny", "CN", "CNYY", "XYZ", "C1Y", "ÇNY"])
def test_unknown_or_malformed_currencies_are_refused(code: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_currency(code)
    assert refused.value.field == "currency"


def test_known_currencies_pass() -> None:
    for code in ("CNY", "USD", "EUR", "JPY", "HKD"):
        assert validate_currency(code) == code


def test_format_for_people() -> None:
    assert format_minor(123456, "CNY") == "1,234.56 CNY"
    assert format_minor(-5, "USD") == "-0.05 USD"
    assert format_minor(1500, "JPY") == "1,500 JPY"
    assert format_minor(1234, "BHD") == "1.234 BHD"
