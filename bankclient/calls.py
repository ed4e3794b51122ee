"""Counting calls, as opposed to operations: each attempt at one gateway is a call, and one
operation may take several (a gateway refused, the next one answered)."""

from __future__ import annotations

import threading
from typing import Any

import grpc


class CallCounter(grpc.UnaryUnaryClientInterceptor):
    """A client interceptor that counts every unary call and its failures by status code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.failed_by_code: dict[str, int] = {}

    def intercept_unary_unary(self, continuation: Any, call_details: Any, request: Any) -> Any:
        outcome = continuation(call_details, request)
        failed = outcome.exception() is not None
        with self._lock:
            self.calls += 1
            if failed:
                code = outcome.code().name
                self.failed_by_code[code] = self.failed_by_code.get(code, 0) + 1
        return outcome

    def figures(self) -> dict[str, Any]:
        with self._lock:
            failed = sum(self.failed_by_code.values())
            return {"calls": self.calls, "failed": failed, "failed_by_code": dict(self.failed_by_code)}
