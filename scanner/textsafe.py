"""The one boundary for text that came from a target.

Banners, headers, certificate subjects, JSON answers, log lines and the error texts built from them are hostile
until they have passed `clean_value`. After it a string holds no NUL (PostgreSQL text refuses it), no lone
surrogate (UTF-8 cannot encode it: one would stop every report), no control or escape character that a terminal
would obey (ESC, CR, BEL, C1), and no invisible bidirectional override that could reorder evidence on screen.
Those characters are not dropped silently: each becomes a visible, unambiguous token (``\\x1b``, ``<U+202E>``,
U+FFFD for a broken surrogate), so the evidence still shows that the target sent them. Strings are capped in length.

Tab and newline stay: banners and certificate fields use them, and every output (HTML escapes, JSON escapes, the
terminal printer in the CLI) handles them. Pure functions, no dependencies: every room may import this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_TEXT_CHARS = 16_384  # per string; evidence is trimmed, not an archive of what the target sent
MAX_DEPTH = 32  # nesting of facts; deeper structures are cut (no probe produces more than a few levels)

# C0 controls except TAB and LF, DEL, C1 controls; lone surrogates; bidi embeddings, overrides, isolates and marks.
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_UNSAFE = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f\\ud800-\\udfff{_BIDI}]")


def _visible(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"<U+{code:04X}>"


def clean_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` with every unsafe character made visible and at most `limit` characters (plus a cut marker)."""
    if len(text) > limit:
        cut = len(text) - limit
        text = f"{text[:limit]}… [{cut} more characters cut]"
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_visible, text)


def is_clean(text: str) -> bool:
    """Whether `text` could be shown or stored as it is (what `clean_text` guarantees, without the length cap)."""
    return _UNSAFE.search(text) is None


def clean_value(value: Any, depth: int = 0) -> Any:
    """A JSON-like value (str, numbers, bool, None, lists, tuples and dicts of those) with every string cleaned.

    Dict keys are cleaned too (a target chooses the keys of a JSON answer). Anything nested deeper than
    `MAX_DEPTH` becomes a marker string. Other types pass unchanged (datetimes, enums: made by hcscan, not a target).
    """
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if depth >= MAX_DEPTH:
        return "[nesting too deep: cut]"
    if isinstance(value, Mapping):
        return {(clean_text(k) if isinstance(k, str) else k): clean_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_value(v, depth + 1) for v in value]
    return value
