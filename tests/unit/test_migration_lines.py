"""The lines a hand-over books: what brings each side's booked lines to the moved sums, given
what was booked ahead (the booking itself runs against PostgreSQL in test_slot_moves.py)."""

from __future__ import annotations

from services.storage.migration_lines import to_book


def test_nothing_booked_ahead_books_every_sum_with_its_side_s_sign() -> None:
    needed = {("T1", "CNY"): 100, ("T2", "USD"): -5}
    assert to_book(needed, 1, {}) == [("T1", "CNY", 100), ("T2", "USD", -5)]
    assert to_book(needed, -1, {}) == [("T1", "CNY", -100), ("T2", "USD", 5)]


def test_only_what_changed_since_the_booking_ahead_is_booked() -> None:
    ahead = {("T1", "CNY"): 100, ("T2", "CNY"): 40, ("T3", "CNY"): 7}
    # T1 unchanged, T2 grew by 10, T3 now sums to zero (moved whole), T4 is new.
    needed = {**ahead, ("T2", "CNY"): 50, ("T3", "CNY"): 0, ("T4", "CNY"): -3}
    source_booked = dict(ahead)
    target_booked = {key: -amount for key, amount in ahead.items()}
    assert to_book(needed, 1, source_booked) == [("T2", "CNY", 10), ("T3", "CNY", -7), ("T4", "CNY", -3)]
    assert to_book(needed, -1, target_booked) == [("T2", "CNY", -10), ("T3", "CNY", 7), ("T4", "CNY", 3)]


def test_a_side_booked_in_full_books_nothing_more() -> None:
    needed = {("T1", "CNY"): 100, ("T2", "CNY"): -20}
    assert to_book(needed, 1, dict(needed)) == []
    assert to_book(needed, -1, {key: -amount for key, amount in needed.items()}) == []
