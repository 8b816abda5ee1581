"""Redaction, the only place it happens: sensitive headers and query values never reach logs or spans.

A name is sensitive when it contains one of the ``sensitive_fields`` words (case-insensitive):

>>> redact_query("user=7&access_token=abc&Password=x", ("token", "password"))
'user=7&access_token=REDACTED&Password=REDACTED'

Every path that could carry a secret goes through here: the server span's ``url.query``
(:func:`redact_query`, in the server middleware), the httpx client span's ``url.full``
(:func:`client_request_hooks`),
the URLs HTTP clients write into log lines (:class:`RedactUrls`), the header values the
instrumentations capture on request (:func:`header_sanitize_patterns`), and the statements database
instrumentations put on their spans (:func:`sanitize_statement`):

>>> sanitize_statement("SELECT * FROM users WHERE email = 'ann@example.com' AND age > 41 AND id = %(id)s")
'SELECT * FROM users WHERE email = ? AND age > ? AND id = %(id)s'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "RedactUrls",
    "client_request_hooks",
    "header_sanitize_patterns",
    "is_sensitive",
    "redact_logged_urls",
    "redact_query",
    "redact_url",
    "sanitize_statement",
]

REDACTED = "REDACTED"
#: loggers of HTTP clients that write full URLs into their records
URL_LOGGERS = ("httpx", "httpcore")


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


def header_sanitize_patterns(words: Sequence[str]) -> str:
    """``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS`` for ``words``: captured values redacted."""
    return ",".join(f".*{word}.*" for word in words)


def client_request_hooks(
    words: Sequence[str],
) -> tuple[Callable[[Any, Any], None], Callable[[Any, Any], Awaitable[None]]]:
    """Httpx request hooks (sync, async) that set ``url.full`` with the secrets redacted."""

    def hook(span: Any, request: Any) -> None:
        if span.is_recording():
            span.set_attribute("url.full", redact_url(str(request.url), words))

    async def async_hook(span: Any, request: Any) -> None:
        hook(span, request)

    return hook, async_hook


class RedactUrls(logging.Filter):
    """Redacts the URLs httpx logs ("HTTP Request: GET https://…?api_key=…"): their query values may be secrets."""

    def __init__(self, words: Sequence[str]) -> None:
        super().__init__()
        self._words = tuple(words)

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace URL arguments by their redacted text; never drops the record."""
        if isinstance(record.args, tuple) and any("://" in str(arg) for arg in record.args):
            record.args = tuple(
                redact_url(str(arg), self._words) if "://" in str(arg) else arg for arg in record.args
            )
        return True


def redact_logged_urls(words: Sequence[str]) -> Callable[[], None]:
    """Attach :class:`RedactUrls` (once, replacing an older one) to the HTTP clients' loggers.

    Returns what takes them off again (``shutdown()``): each filter it added is removed, and the
    older one it replaced put back, only if its filter is still on the logger.
    """
    changed: list[tuple[logging.Logger, list[RedactUrls], RedactUrls]] = []
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        old = [f for f in logger.filters if isinstance(f, RedactUrls)]
        for replaced in old:
            logger.removeFilter(replaced)
        added = RedactUrls(words)
        logger.addFilter(added)
        changed.append((logger, old, added))

    def undo() -> None:
        for logger, old, added in changed:
            if added in logger.filters:
                logger.removeFilter(added)
                for replaced in old:
                    logger.addFilter(replaced)

    return undo


#: One SQL token per match, left to right: kept (quoted identifiers, comments' delimiters, bind
#: placeholders, names that contain digits) or replaced (string, dollar-quoted and numeric literals).
#: An unterminated string runs to the end: when in doubt, more is replaced, never less.
_SQL_TOKENS = re.compile(
    r"""
      (?P<string>(?:[EeBbXxNn]|[Uu]&)?'(?:[^'\\]|''|\\.)*(?:'|\Z))              # 'text', E'..', X'..'
    | (?P<identifier>"(?:[^"]|"")*"|`[^`]*`|[A-Za-z_][\w$]*)                       # quoted or plain names
    | (?P<placeholder>%\(\w+\)s|%s|\$\d+|:[A-Za-z_]\w*|\?)                     # bind parameters
    | (?P<dollar>\$\$.*?(?:\$\$|\Z)|\$(?P<tag>[A-Za-z_]\w*)\$.*?(?:\$(?P=tag)\$|\Z))  # $$body$$, $fn$body$fn$
    | (?P<number>(?:0[xX][0-9A-Fa-f]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))     # 42, 4.2, .5, 1e3, 0xFF
    """,
    re.VERBOSE | re.DOTALL,
)


def _literal_to_mark(match: re.Match[str]) -> str:
    return "?" if match.lastgroup in ("string", "dollar", "number") or match.group("tag") else match.group()


def sanitize_statement(statement: str) -> str:
    """``statement`` with every literal value (strings, numbers, dollar-quoted bodies) replaced by ``?``.

    Database spans carry the statement's shape (``db.statement`` / ``db.query.text``), never the
    values in it: the OpenTelemetry semantic conventions collect the text only "if there is
    sanitization that excludes sensitive information". Names, keywords and bind placeholders
    (``%s``, ``%(name)s``, ``$1``, ``:name``, ``?``) are kept. A backslash escapes the next
    character inside a string (MySQL's default, PostgreSQL's ``E''`` strings), so a standard
    PostgreSQL string that ends in a backslash takes the rest of the statement with it: more is
    replaced, never less.
    """
    return _SQL_TOKENS.sub(_literal_to_mark, statement)
