"""A batch request's units carry their outcomes in `Outcome`, which must answer as a Future."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from services.storage.group_commit import Outcome


@pytest.mark.parametrize("kind", [Future, Outcome])
def test_an_outcome_answers_as_a_settled_future(kind: Any) -> None:
    ok, failed = kind(), kind()
    assert not ok.done()
    ok.set_result(42)
    failed.set_exception(ValueError("refused"))
    assert ok.done() and failed.done()
    assert ok.result() == 42 and ok.exception() is None
    assert isinstance(failed.exception(), ValueError)
    with pytest.raises(ValueError, match="refused"):
        failed.result()


def test_an_outcome_read_before_it_is_settled_says_so_instead_of_waiting() -> None:
    with pytest.raises(RuntimeError, match="not run"):
        Outcome().result()
