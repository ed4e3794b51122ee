"""Checks of request fields that need no state: ids, free text, paging."""

from __future__ import annotations

import base64
import binascii
import re

from services.common.errors import InvalidArgument

MAX_REQUEST_ID = 128
MAX_CUSTOMER_ID = 64
MAX_REFERENCE = 140  # as long as a SEPA remittance line
MAX_REASON = 200
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_BATCH_TRANSFERS = 4096  # per CreateTransfers call
DEFAULT_HOLD_TIMEOUT_S = 600
MAX_HOLD_TIMEOUT_S = 7 * 24 * 3600

_REQUEST_ID = re.compile(r"[\x21-\x7e]+")
_CUSTOMER_ID = re.compile(r"[A-Za-z0-9._:@-]+")


def validate_request_id(text: str, field: str = "request_id") -> str:
    if not text:
        raise InvalidArgument(field, "required (a client-chosen idempotency key, e.g. a UUID)")
    if len(text) > MAX_REQUEST_ID:
        raise InvalidArgument(field, f"longer than {MAX_REQUEST_ID} characters ({len(text)})")
    if not _REQUEST_ID.fullmatch(text):
        raise InvalidArgument(field, "may hold only printable ASCII characters without spaces")
    return text


def validate_customer_id(text: str, field: str = "customer_id") -> str:
    if not text:
        raise InvalidArgument(field, "required")
    if len(text) > MAX_CUSTOMER_ID:
        raise InvalidArgument(field, f"longer than {MAX_CUSTOMER_ID} characters ({len(text)})")
    if not _CUSTOMER_ID.fullmatch(text):
        raise InvalidArgument(field, "may hold only letters, digits and . _ : @ -")
    return text


def validate_free_text(text: str, field: str, limit: int) -> str:
    """Free text (references, reasons): any printable text up to a length."""
    if len(text) > limit:
        raise InvalidArgument(field, f"longer than {limit} characters ({len(text)})")
    if any(not char.isprintable() for char in text):
        raise InvalidArgument(field, "may not hold control characters")
    return text


def validate_page_size(size: int, field: str = "page_size") -> int:
    if size == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidArgument(field, f"must be between 1 and {MAX_PAGE_SIZE} (got {size})")
    return size


def validate_hold_timeout(seconds: int, field: str = "timeout_seconds") -> int:
    if seconds == 0:
        return DEFAULT_HOLD_TIMEOUT_S
    if seconds > MAX_HOLD_TIMEOUT_S:
        raise InvalidArgument(field, f"at most {MAX_HOLD_TIMEOUT_S} seconds (got {seconds})")
    return seconds


def encode_page_token(after_sequence: int) -> str:
    return base64.urlsafe_b64encode(f"p1:{after_sequence}".encode()).decode().rstrip("=")


def decode_page_token(token: str, field: str = "page_token") -> int:
    """Returns the posting sequence a page starts after (0 for the first page)."""
    if not token:
        return 0
    if len(token) > 64:
        raise InvalidArgument(field, "is not a token this service issued")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument(field, "is not a token this service issued") from None
    prefix, _, number = raw.partition(":")
    if prefix != "p1" or not number.isdigit():
        raise InvalidArgument(field, "is not a token this service issued")
    return int(number)


def validate_batch_size(count: int) -> int:
    if count == 0:
        raise InvalidArgument("transfers", "at least one transfer is needed")
    if count > MAX_BATCH_TRANSFERS:
        raise InvalidArgument("transfers", f"at most {MAX_BATCH_TRANSFERS} per call, not {count}")
    return count
