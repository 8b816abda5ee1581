"""Sensitive headers and query parameters never reach logs or span attributes.

A name is sensitive when it contains one of the ``sensitive_fields`` words (case-insensitive):

>>> redact_query("user=7&access_token=abc&Password=x", ("token", "password"))
'user=7&access_token=REDACTED&Password=REDACTED'
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

__all__ = ["REDACTED", "is_sensitive", "redact_query", "redact_url"]

REDACTED = "REDACTED"


def is_sensitive(name: str, words: Sequence[str]) -> bool:
    """Whether a header or parameter called ``name`` holds a secret."""
    lowered = name.lower()
    return any(word in lowered for word in words)


def redact_query(query: str, words: Sequence[str]) -> str:
    """The query string with the values of sensitive parameters replaced; the rest byte-for-byte."""
    if not query:
        return query
    parts = []
    for part in query.split("&"):
        name, sep, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if sep and is_sensitive(name, words) else part)
    return "&".join(parts)


def redact_url(url: str, words: Sequence[str]) -> str:
    """The URL with sensitive query values and any user:password part replaced."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}:{REDACTED}@{netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query, words), parts.fragment))
