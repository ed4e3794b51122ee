"""Maps the bank's domain errors to gRPC status codes, in this one place."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import grpc

from services.common.errors import BankError

log = logging.getLogger(__name__)

REASON_KEY = "bank-error-reason"
EPOCH_KEY = "bank-shard-epoch"
# The shard epoch the caller routed this request with (set per call from its metadata).
ROUTED_EPOCH: ContextVar[int | None] = ContextVar("routed_epoch", default=None)
F = TypeVar("F", bound=Callable[..., Any])


def rpc_method(method: F) -> F:
    """Wraps a servicer method: a BankError becomes its status code, with its message and its
    reason in the trailing metadata; anything else is logged and answered INTERNAL without
    leaking details to the caller."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        token = ROUTED_EPOCH.set(_routed_epoch(context))
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
        finally:
            ROUTED_EPOCH.reset(token)

    return wrapper  # type: ignore[return-value]


def _routed_epoch(context: grpc.ServicerContext) -> int | None:
    for key, value in context.invocation_metadata() or ():
        if key == EPOCH_KEY and isinstance(value, str) and value.isdigit():
            return int(value)
    return None
