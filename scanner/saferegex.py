"""Regular expressions written by administrators, run over text that came from targets.

Python's `re` backtracks: a pattern such as ``(a+)+$`` takes exponential time on a hostile banner and
cannot be interrupted (it holds the GIL). Admin patterns are therefore compiled with RE2 (google-re2),
whose matching time is linear in the input. RE2 has no backreferences or look-around; such a pattern is
refused when it is loaded, with a message that says so, never at scan time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import re2

MAX_PATTERN_LENGTH = 500
MAX_SUBJECT_LENGTH = 10_000  # longest text a pattern looks at


class UnsafePatternError(ValueError):
    """A pattern that RE2 cannot compile (syntax error, backreference, look-around, huge repetition)."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    return options


@dataclass(frozen=True)
class SafePattern:
    """A compiled admin pattern: `search` runs in time linear in the (truncated) subject."""

    pattern: str
    _compiled: Any = field(repr=False, compare=False)

    def search(self, text: str) -> SafeMatch | None:
        subject = text[:MAX_SUBJECT_LENGTH]
        try:
            m = self._compiled.search(subject)
        except UnicodeEncodeError:  # lone surrogates (undecodable bytes from a target): match them as U+FFFD
            m = self._compiled.search(subject.encode("utf-8", "replace").decode("utf-8"))
        return None if m is None else SafeMatch(m.start(), dict(m.groupdict()))

    @property
    def group_names(self) -> frozenset[str]:
        return frozenset(self._compiled.groupindex)


@dataclass(frozen=True)
class SafeMatch:
    start: int
    groups: dict[str, str | None]


@functools.lru_cache(maxsize=1024)
def compile_safe(pattern: str, max_length: int = MAX_PATTERN_LENGTH) -> SafePattern:
    """Compile with RE2; raise UnsafePatternError with RE2's reason (and what to use instead)."""
    if not isinstance(pattern, str):
        raise UnsafePatternError("a regular expression must be a string")
    if len(pattern) > max_length:
        raise UnsafePatternError(f"regular expression longer than {max_length} characters")
    try:
        compiled = re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        hint = ""
        if "perl operator" in reason or "escape sequence" in reason:
            hint = " (hcscan runs regexes with RE2: no backreferences or look-around)"
        raise UnsafePatternError(f"{reason}{hint}") from None
    except (TypeError, ValueError) as exc:  # e.g. a NUL byte or a surrogate the binding cannot encode
        raise UnsafePatternError(str(exc)) from None
    return SafePattern(pattern, compiled)
