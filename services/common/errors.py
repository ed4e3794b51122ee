"""The bank's domain errors: a small hierarchy, each class mapping to exactly one gRPC status."""

from __future__ import annotations


class BankError(Exception):
    """Base of every error the bank reports to a caller.

    `status` names the gRPC status code (the rpc layer maps it; domain code never imports grpc),
    `reason` is a stable machine-readable word for clients, and the message says what is wrong
    in a sentence that names the field or the object concerned.
    """

    status = "INTERNAL"
    reason = "INTERNAL"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(BankError):
    """The request itself is wrong, whatever the state of the bank."""

    status = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(BankError):
    status = "NOT_FOUND"
    reason = "NOT_FOUND"


class FailedPrecondition(BankError):
    """The request is well formed but the state of the bank refuses it; never retried."""

    status = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class InsufficientFunds(FailedPrecondition):
    reason = "INSUFFICIENT_FUNDS"


class AccountNotActive(FailedPrecondition):
    """The account is frozen or closed."""

    reason = "ACCOUNT_NOT_ACTIVE"


class CurrencyMismatch(FailedPrecondition):
    reason = "CURRENCY_MISMATCH"


class RequestIdReused(FailedPrecondition):
    """The same request id came back with another payload."""

    reason = "REQUEST_ID_REUSED"


class HoldNotActive(FailedPrecondition):
    reason = "HOLD_NOT_ACTIVE"


class AccountNotEmpty(FailedPrecondition):
    reason = "ACCOUNT_NOT_EMPTY"


class Unavailable(BankError):
    """A passing condition (database restarting, leader moving): the caller may retry."""

    status = "UNAVAILABLE"
    reason = "UNAVAILABLE"
    retryable = True


class Aborted(BankError):
    """The transaction lost a conflict with another one (deadlock, serialization); retry it whole."""

    status = "ABORTED"
    reason = "ABORTED"
    retryable = True


class NotLeader(Unavailable):
    """This node does not serve the shard the request belongs to: re-route and retry."""

    reason = "NOT_LEADER"


class SlotMoving(Unavailable):
    """The slot is on its way to another shard (frozen for a moment): retry shortly."""

    reason = "SLOT_MOVING"


class SlotMoved(NotLeader):
    """The slot now belongs to another shard: re-route (the message names it) and retry."""

    reason = "SLOT_MOVED"


class CrossShard(FailedPrecondition):
    """The request spans two shards and this path does not support it."""

    reason = "CROSS_SHARD"


def error_from_reason(reason: str, message: str) -> BankError:
    """The domain error another node reported by its reason word and message (a peer's refusal
    rebuilt here, so that it reaches the caller with the same code, reason and message)."""
    cls = _BY_REASON.get(reason, BankError)
    error = cls.__new__(cls)
    BankError.__init__(error, message)
    return error


def _subclasses(cls: type[BankError]) -> list[type[BankError]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _subclasses(sub))]


# Each reason word names one class (the base classes' words are their own status names).
_BY_REASON: dict[str, type[BankError]] = {c.reason: c for c in _subclasses(BankError)}
