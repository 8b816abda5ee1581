"""The ASGI side of a request, read once: types, headers, URL, route template, and the per-request view.

Several parts of qm-otel's stack read the same request: the correlation middleware (the
correlation header, the trace context), the server span (every attribute, the parent context),
the request log (the query, the route). :class:`RequestView` holds what they share, worked out once
per request and kept in the scope under ``"qm_otel"``: the headers decoded once (a field sent in
several lines combined, as RFC 9110 §5.3 says, before anyone parses it; the first line of each too),
the query redacted once, the parent context extracted once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.util.http import ExcludeList

from qm_otel.core.redaction import redact_query

__all__ = [
    "SCOPE_KEY",
    "ASGIApp",
    "Exclusions",
    "Message",
    "Receive",
    "RequestView",
    "Scope",
    "Send",
    "request_url",
    "route_template",
    "view_of",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: the scope key of the request's :class:`RequestView`
SCOPE_KEY = "qm_otel"
_NONE: frozenset[str] = frozenset()


class RequestView:
    """What qm-otel's middlewares share about one request (see the module's documentation)."""

    __slots__ = ("_parent", "_query", "first", "headers", "raw_query", "repeated")

    def __init__(self, raw_headers: Sequence[tuple[bytes, bytes]], raw_query: bytes) -> None:
        combined: dict[str, str] = {}
        first: dict[str, str] = {}
        repeated: set[str] | None = None  # made for the first repeated line only
        for name, value in raw_headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            if key not in first:
                first[key] = text
                combined[key] = text
                continue
            if repeated is None:
                repeated = set()
            repeated.add(key)
            if text.strip():  # an empty line adds no member to the list
                combined[key] = f"{combined[key]},{text}" if combined[key].strip() else text
        #: each header, its lines joined with commas (RFC 9110 §5.3), by lower-case name
        self.headers = combined
        #: each header's first line (a singleton field such as a correlation ID)
        self.first = first
        #: the (lower-case) names sent in more than one line
        self.repeated: AbstractSet[str] = repeated or _NONE
        self.raw_query = raw_query
        self._query: tuple[tuple[str, ...], str] | None = None
        self._parent: Context | None = None

    def query(self, sensitive: tuple[str, ...]) -> str:
        """The query string with the values of ``sensitive`` parameters replaced (worked out once)."""
        cached = self._query
        if cached is not None and cached[0] == sensitive:
            return cached[1]
        redacted = redact_query(self.raw_query.decode("latin-1"), sensitive) if self.raw_query else ""
        self._query = (sensitive, redacted)
        return redacted

    def parent(self) -> Context:
        """The context the global propagator extracts from the headers (worked out once)."""
        if self._parent is None:
            self._parent = propagate.extract(self.headers)
        return self._parent


class Exclusions:
    """The URLs neither traced nor logged (health endpoints): the OTel ``ExcludeList``, its answers remembered.

    The list's patterns are regular-expression searches over ``scheme://host/path``; the answer for
    a URL is kept (up to 4096 URLs, then forgotten together), so a service's usual URLs are matched once.
    """

    _REMEMBERED = 4096

    def __init__(self, patterns: Sequence[str]) -> None:
        self._list = ExcludeList(list(patterns)) if patterns else None
        self._answers: dict[str, bool] = {}

    def excluded(self, scope: Scope, view: RequestView) -> bool:
        """Whether the request's URL is excluded."""
        if self._list is None:
            return False
        url = request_url(scope, view.first)
        answer = self._answers.get(url)
        if answer is None:
            answer = bool(self._list.url_disabled(url))
            if len(self._answers) >= self._REMEMBERED:
                self._answers.clear()
            self._answers[url] = answer
        return answer


def view_of(scope: Scope) -> RequestView:
    """The request's view, made from the scope the first time it is asked for."""
    view = scope.get(SCOPE_KEY)
    if not isinstance(view, RequestView):
        view = RequestView(scope.get("headers") or (), scope.get("query_string") or b"")
        scope[SCOPE_KEY] = view
    return view


def request_url(scope: Scope, headers: dict[str, str]) -> str:
    """``scheme://host/path``: the URL exclusions are matched against (as the contrib instrumentation builds it)."""
    server = scope.get("server") or ("0.0.0.0", 80)  # noqa: S104 - the ASGI default, only a URL part
    host = headers.get("host") or (server[0] + (f":{server[1]}" if server[1] != 80 else ""))
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('path', '')}"


def route_template(scope: Scope) -> str | None:
    """The full route template the app matched (``/api/v1/items/{id}``), or None when nothing matched.

    Read after routing: FastAPI's effective route context (nested routers, FastAPI >= 0.137), else
    ``scope["route"]`` (FastAPI's routes, Starlette >= 0.4x's router); for an older Starlette that
    routed the request (an ``endpoint`` is set) without naming the route, the app's routes are matched.
    """
    effective = scope.get("fastapi", {}).get("effective_route_context")
    path = getattr(effective, "path", None)
    if path is None:
        path = getattr(scope.get("route"), "path", None)
    if path is None and "endpoint" in scope:
        path = _matched_path(scope)
    return path if isinstance(path, str) else None


def _matched_path(scope: Scope) -> str | None:
    from starlette.routing import Match

    for route in getattr(scope.get("app"), "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return getattr(route, "path", None)
    return None
