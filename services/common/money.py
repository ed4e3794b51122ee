"""Currencies and amounts: integers of minor units, parsed exactly, never floats."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

# ISO-4217 alphabetic code -> number of minor-unit digits. A bank supports a list of currencies,
# not every code that exists; an unknown code is refused rather than guessed.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AUD": 2, "BHD": 3, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2, "DKK": 2, "EUR": 2,
    "GBP": 2, "HKD": 2, "IDR": 2, "INR": 2, "JPY": 0, "KRW": 0, "KWD": 3, "MOP": 2,
    "MXN": 2, "MYR": 2, "NOK": 2, "NZD": 2, "PHP": 2, "PLN": 2, "SEK": 2, "SGD": 2,
    "THB": 2, "TWD": 2, "USD": 2, "VND": 0, "ZAR": 2,
}  # fmt: skip

INT64_MAX = 2**63 - 1
# The largest single movement: 10^15 minor units (10 trillion CNY). Far below the int64 range,
# so that no sum of a few movements can overflow before the balance check refuses it.
MAX_AMOUNT_MINOR = 10**15
# A balance may not leave the int64 range of the database column.
MAX_BALANCE_MINOR = INT64_MAX

_DECIMAL = re.compile(r"(?P<whole>[0-9]{1,30})(?:\.(?P<frac>[0-9]{1,30}))?")


def validate_currency(code: str, field: str = "currency") -> str:
    if not code:
        raise InvalidArgument(field, "required (an ISO-4217 code such as CNY)")
    if len(code) != 3 or not code.isascii() or not code.isalpha() or not code.isupper():
        raise InvalidArgument(field, f"{code[:16]!r} is not an ISO-4217 code (3 upper-case letters)")
    if code not in CURRENCY_EXPONENTS:
        raise InvalidArgument(field, f"currency {code} is not supported by this bank")
    return code


def validate_amount_minor(amount: int, field: str = "amount") -> int:
    """Checks a positive movement given in minor units."""
    if amount <= 0:
        raise InvalidArgument(field, f"must be greater than zero (got {amount})")
    if amount > MAX_AMOUNT_MINOR:
        raise InvalidArgument(field, f"{amount} exceeds the largest single movement ({MAX_AMOUNT_MINOR})")
    return amount


def parse_decimal_amount(text: str, currency: str, field: str = "amount_decimal") -> int:
    """Turns an exact decimal of major units ("12.34") into minor units (1234), or refuses it."""
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise InvalidArgument(field, f"{text[:40]!r} is not a plain decimal number like 12.34")
    exponent = CURRENCY_EXPONENTS[currency]
    fraction = (match.group("frac") or "").rstrip("0")
    if len(fraction) > exponent:
        raise InvalidArgument(
            field,
            f"{text} is not a whole number of {currency} minor units "
            f"({currency} has {exponent} decimal places)",
        )
    minor = int(match.group("whole")) * 10**exponent + int(fraction.ljust(exponent, "0") or "0")
    return validate_amount_minor(minor, field)


def format_minor(amount: int, currency: str) -> str:
    """Shows minor units as a decimal for people: 123456 CNY -> '1,234.56 CNY'."""
    exponent = CURRENCY_EXPONENTS.get(currency, 2)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**exponent)
    text = f"{whole:,}" + (f".{frac:0{exponent}d}" if exponent else "")
    return f"{sign}{text} {currency}"
