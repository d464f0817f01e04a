"""Keeping configured secrets out of messages: URLs shown only as scheme://host:port, secret values removed.

Webhook URLs often carry the secret themselves (a chat service's path, a `?token=` query, `user:password@`), and
library error texts repeat the URL they failed on. Every error or log line that may hold a configured URL or a
secret passes through `mask_url` / `scrub` first. Pure functions, no dependencies: every room may import this.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

HIDDEN = "…"

_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\],]+")
# urllib3 names the request target on its own: "Max retries exceeded with url: /path?query (Caused by …)"
_URL_LABEL = re.compile(r"(\burl: )\S+", re.IGNORECASE)


def mask_url(url: str) -> str:
    """`scheme://host:port` plus `/…` when the URL had a path, query, fragment or credentials (all hidden)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        port = parts.port
    except ValueError:
        return HIDDEN
    if not parts.scheme or not host:
        return HIDDEN
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    hidden = (
        parts.path not in ("", "/")
        or bool(parts.query)
        or bool(parts.fragment)
        or parts.username is not None
        or parts.password is not None
    )
    return f"{parts.scheme}://{netloc}" + (f"/{HIDDEN}" if hidden else "")


def scrub(text: str, urls: Iterable[str] = (), secrets: Iterable[str | None] = ()) -> str:
    """`text` with every URL masked, the secret parts of `urls` and every value in `secrets` replaced by `…`."""
    for url in urls:
        if url:
            text = text.replace(url, mask_url(url))
    text = _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)
    text = _URL_LABEL.sub(lambda m: m.group(1) + HIDDEN, text)
    pieces: list[str] = []
    for url in urls:
        try:
            parts = urlsplit(url)
            userinfo = parts.netloc.rpartition("@")[0]
        except ValueError:
            continue
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        pieces += [target, parts.path, parts.query, parts.fragment, userinfo]
    pieces += [s for s in secrets if s]
    # Longest first, so that a piece containing another is removed whole; "/" alone is no secret.
    for piece in sorted({p for p in pieces if p and p != "/"}, key=len, reverse=True):
        text = text.replace(piece, HIDDEN)
    return text
