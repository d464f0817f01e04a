"""Interval arithmetic of a redundant service (pure): up while any instance was seen up, down only while every
instance was seen down, unknown otherwise. Checked against a point-by-point model on a small integer grid."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.availability import Interval, intersect, merge, service_coverage, subtract

GRID = 40

intervals = st.lists(st.tuples(st.integers(0, GRID), st.integers(1, 12)).map(lambda p: (p[0], p[0] + p[1])), max_size=6)


def _points(spans: list[Interval]) -> set[int]:
    return {t for a, b in spans for t in range(a, b)}


def _instance() -> st.SearchStrategy[tuple[list[Interval], list[Interval]]]:
    """One instance's coverage: up and down spans never overlap (a sample is one or the other)."""

    def split(spans: list[Interval], downs: list[bool]) -> tuple[list[Interval], list[Interval]]:
        up = merge(s for s, d in zip(spans, downs, strict=False) if not d)
        down = subtract(merge(s for s, d in zip(spans, downs, strict=False) if d), up)
        return up, down

    return st.builds(split, intervals, st.lists(st.booleans(), min_size=6, max_size=6))


@settings(max_examples=300, derandomize=True, deadline=None)
@given(intervals, intervals)
def test_intersect_and_subtract_match_point_sets(a: list[Interval], b: list[Interval]) -> None:
    ma, mb = merge(a), merge(b)
    assert _points(intersect(ma, mb)) == _points(ma) & _points(mb)
    assert _points(subtract(ma, mb)) == _points(ma) - _points(mb)
    assert merge(intersect(ma, mb)) == intersect(ma, mb) and merge(subtract(ma, mb)) == subtract(ma, mb)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(_instance(), min_size=1, max_size=4))
def test_service_is_up_if_any_instance_is_and_down_only_if_all_are(
    instances: list[tuple[list[Interval], list[Interval]]],
) -> None:
    up, down = service_coverage(instances)
    for t in range(GRID + 13):
        seen = [("up" if t in _points(u) else "down" if t in _points(d) else None) for u, d in instances]
        expected = "up" if "up" in seen else "down" if all(s == "down" for s in seen) else None
        got = "up" if t in _points(up) else "down" if t in _points(down) else None
        assert got == expected, (t, seen)


def test_worked_example() -> None:
    a = ([(0, 5), (8, 20)], [(5, 8)])  # down 5..8
    b = ([(0, 8), (10, 20)], [(8, 10)])  # down 8..10
    assert service_coverage([a, b]) == ([(0, 20)], [])  # never both down at once
    assert service_coverage([a, ([(0, 6), (9, 20)], [(6, 9)])]) == ([(0, 6), (8, 20)], [(6, 8)])
    c = ([(0, 6), (7, 20)], [(6, 7)])  # down 6..7
    assert service_coverage([a, c]) == ([(0, 6), (7, 20)], [(6, 7)])
    unseen: tuple[list[Interval], list[Interval]] = ([], [])
    assert service_coverage([a, unseen]) == ([(0, 5), (8, 20)], [])  # a down, the other unseen: unknown
    assert service_coverage([]) == ([], [])
