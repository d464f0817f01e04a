"""Version comparison for real-world version strings ("1.2.10", "8.9p1", "2.4.57 (Debian)")."""

from __future__ import annotations

import re
from functools import total_ordering

_TOKEN = re.compile(r"\d+|[a-z]+")
_PRE_RELEASE = frozenset({"a", "alpha", "b", "beta", "rc", "pre", "preview", "dev"})


@total_ordering
class Version:
    """A loose version: digit runs compare as numbers, letter runs as text; a trailing distro suffix is ignored.

    "8.9p1" → (8, 9, "p", 1); "2.4.57 (Debian)" → (2, 4, 57). Missing parts count as 0, so "1.2" == "1.2.0".
    """

    def __init__(self, text: str) -> None:
        head = text.strip().split(" ", 1)[0].lower()
        tokens = _TOKEN.findall(head)
        if not tokens or not tokens[0].isdigit():
            raise ValueError(f"not a version: {text!r}")
        self.text = text
        self.parts: tuple[int | str, ...] = tuple(int(t) if t.isdigit() else t for t in tokens)

    def _key(self, length: int) -> tuple[tuple[int, int | str], ...]:
        padded = list(self.parts) + [0] * (length - len(self.parts))
        # Pre-release tags sort before the release ("1.0rc1" < "1.0"); other letters are patch levels and sort
        # after it ("8.9p1" > "8.9", "1.0.2k" > "1.0.2").
        return tuple((1, p) if isinstance(p, int) else ((0, p) if p in _PRE_RELEASE else (2, p)) for p in padded)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        n = max(len(self.parts), len(other.parts))
        return self._key(n) == other._key(n)

    def __lt__(self, other: Version) -> bool:
        n = max(len(self.parts), len(other.parts))
        return self._key(n) < other._key(n)

    def __hash__(self) -> int:
        parts = list(self.parts)
        while parts and parts[-1] == 0:
            parts.pop()
        return hash(tuple(parts))

    def __repr__(self) -> str:
        return f"Version({self.text!r})"
