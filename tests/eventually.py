"""The one way tests wait for a condition: poll it until it holds or the time is up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(condition: Callable[[], T], timeout_s: float, what: str = "", interval_s: float = 0.05) -> T:
    """Returns the first truthy value `condition` gives; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s} s: {what or condition}")
        time.sleep(interval_s)
