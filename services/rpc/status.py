"""Maps the bank's domain errors to gRPC status codes, in this one place."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from services.common.errors import BankError

log = logging.getLogger(__name__)

REASON_KEY = "bank-error-reason"
F = TypeVar("F", bound=Callable[..., Any])


def rpc_method(method: F) -> F:
    """Wraps a servicer method: a BankError becomes its status code, with its message and its
    reason in the trailing metadata; anything else is logged and answered INTERNAL without
    leaking details to the caller."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except BankError as err:
            log.info(
                "event=rpc_refused method=%s status=%s reason=%s request_id=%s message=%r",
                method.__name__,
                err.status,
                err.reason,
                getattr(request, "request_id", ""),
                err.message,
            )
            context.set_trailing_metadata(((REASON_KEY, err.reason),))
            context.abort(grpc.StatusCode[err.status], err.message)
        except Exception:
            if context.code() not in (None, grpc.StatusCode.OK):
                raise  # the method aborted with its own status (a forwarded one): keep it
            log.exception("event=rpc_failed method=%s", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; the node's log has the details")

    return wrapper  # type: ignore[return-value]
