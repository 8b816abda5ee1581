"""OTLP protobuf encoding of spans and log records, written straight to bytes.

The SDK's OTLP encoders build a protobuf message object per span, per attribute and per value
before serialising them; on the machines qm-otel targets that costs about as much CPU as the
request that produced the span (docs/benchmarks.md). The wire format of these few messages is
small and stable, so this module writes it directly. It produces messages equal to the SDK's (a
test decodes both with ``opentelemetry-proto`` and compares them, field by field, over generated
spans and records); anything it does not handle the way the SDK does (a value type outside the
OTLP ones, an integer beyond 64 bits, text that is not valid UTF-8) raises :class:`Unsupported`,
and the whole batch goes to the SDK's encoder instead.

:func:`with_fast_encoding` gives an SDK OTLP/HTTP exporter class whose own ``export`` (request
size limit, retries, internal metrics: all the SDK's) runs with this encoder in place of the SDK's.
"""

from __future__ import annotations

import struct
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from qm_otel.core.sdk_internals import attribute_dict, fell_back

__all__ = ["Unsupported", "encode_logs", "encode_spans", "with_fast_encoding"]

_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SPAN_FLAGS_HAS_IS_REMOTE, _SPAN_FLAGS_IS_REMOTE = 0x100, 0x200


class Unsupported(ValueError):
    """Something this encoder does not write the way the SDK does: the batch goes to the SDK's encoder."""


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: the varints of 0 … 16383 (every length and most small numbers): a list index instead of a loop
_SMALL_VARINTS = tuple(_encode_varint(n) for n in range(1 << 14))
_SMALL = len(_SMALL_VARINTS)


def _varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < _SMALL else _encode_varint(value)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    size = len(payload)
    return tag + (_SMALL_VARINTS[size] if size < _SMALL else _encode_varint(size)) + payload


def _text(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: the SDK's protobuf refuses them too
        raise Unsupported(str(exc)) from exc


def _any_value(value: Any) -> bytes:  # noqa: PLR0911 - one branch per OTLP value type, in the SDK's order
    """An ``AnyValue``'s payload, choosing the type as the SDK's ``_encode_value`` does."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", _text(value))
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise Unsupported("integer beyond 64 bits")
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()))
    raise Unsupported(f"value of type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x0a", _text(key)) + _field(b"\x12", _any_value(value))


#: encoded attribute fields by (field tag, key, value type, value): most of an item's attributes repeat
#: from item to item (method, route, scheme, status, component...); strings up to this length are kept
_CACHED_TEXT = 256
_CACHE_LIMIT = 8192
_encoded_attributes: dict[tuple[bytes, str, type, Any], bytes] = {}


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """The attributes as repeated ``KeyValue`` fields; text, integer and boolean ones from the cache.

    Floats are not cached (``-0.0 == 0.0`` would share an encoding; durations rarely repeat).
    """
    if not attributes:
        return b""
    cache = _encoded_attributes
    out = []
    # the SDK's BoundedAttributes iterates through a lock and a lookup per key; its dict does not
    for key, value in attribute_dict(attributes).items():
        kind = type(value)
        if kind is int or kind is bool or (kind is str and len(value) <= _CACHED_TEXT):
            cache_key = (tag, key, kind, value)
            encoded = cache.get(cache_key)
            if encoded is None:
                encoded = _field(tag, _key_value(key, value))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[cache_key] = encoded
        else:
            encoded = _field(tag, _key_value(key, value))
        out.append(encoded)
    return b"".join(out)


def _uint(tag: bytes, value: int | None) -> bytes:
    return tag + _varint(value) if value else b""


def _string(tag: bytes, value: str | None) -> bytes:
    return _field(tag, _text(value)) if value else b""


def _scope(scope: Any) -> bytes:
    if scope is None:
        return b""
    return (_string(b"\x0a", scope.name) + _string(b"\x12", scope.version)
            + _attributes(b"\x1a", getattr(scope, "attributes", None)))


def _grouped(items: Iterable[Any]) -> list[tuple[Any, list[tuple[Any, list[Any]]]]]:
    """Items grouped by resource, then by instrumentation scope, in first-seen order (equal ones together)."""
    resources: list[tuple[Any, list[tuple[Any, list[Any]]]]] = []
    by_resource: dict[int, list[tuple[Any, list[Any]]]] = {}
    for item in items:
        resource = item.resource
        scopes = by_resource.get(id(resource))
        if scopes is None:
            scopes = next((found for known, found in resources if known == resource), None)
            if scopes is None:
                scopes = []
                resources.append((resource, scopes))
            by_resource[id(resource)] = scopes
        scope = item.instrumentation_scope or None
        for known_scope, members in scopes:
            if known_scope is scope or known_scope == scope:
                members.append(item)
                break
        else:
            scopes.append((scope, [item]))
    return resources


def _envelope(items: Sequence[Any], encode_item: Callable[[Any], bytes], item_tag: bytes) -> bytes:
    """``Export*ServiceRequest``: resources, each with its scopes, each with its encoded items."""
    out = []
    for resource, scopes in _grouped(items):
        scoped = []
        for scope, members in scopes:
            body = _field(b"\x0a", _scope(scope)) + b"".join(_field(item_tag, encode_item(m)) for m in members)
            scoped.append(_field(b"\x12", body + _string(b"\x1a", scope.schema_url if scope else None)))
        resource_body = _attributes(b"\x0a", resource.attributes)
        body = _field(b"\x0a", resource_body) + b"".join(scoped) + _string(b"\x1a", resource.schema_url)
        out.append(_field(b"\x0a", body))
    return b"".join(out)


def _span(span: Any) -> bytes:
    context = span.get_span_context()
    parent = span.parent
    flags = _SPAN_FLAGS_HAS_IS_REMOTE | (_SPAN_FLAGS_IS_REMOTE if parent is not None and parent.is_remote else 0)
    trace_state = ",".join(f"{k}={v}" for k, v in context.trace_state.items()) if context.trace_state else ""
    status = span.status
    status_body = _string(b"\x12", status.description) + _uint(b"\x18", status.status_code.value)
    parts = [
        b"\x0a\x10", context.trace_id.to_bytes(16, "big"),
        b"\x12\x08", context.span_id.to_bytes(8, "big"),
        _string(b"\x1a", trace_state),
        b"\x22\x08" + parent.span_id.to_bytes(8, "big") if parent is not None else b"",
        _string(b"\x2a", span.name),
        _uint(b"\x30", span.kind.value + 1),  # the SDK's SpanKind enum starts at 0, OTLP's at 1 (0 = unspecified)
        b"\x39" + _FIXED64(span.start_time) if span.start_time else b"",
        b"\x41" + _FIXED64(span.end_time) if span.end_time else b"",
        _attributes(b"\x4a", span.attributes),
        _uint(b"\x50", span.dropped_attributes),
    ]
    for event in span.events if span.events else ():
        parts.append(_field(b"\x5a", (b"\x09" + _FIXED64(event.timestamp) if event.timestamp else b"")
                            + _string(b"\x12", event.name) + _attributes(b"\x1a", event.attributes)
                            + _uint(b"\x20", event.dropped_attributes)))
    parts.append(_uint(b"\x60", span.dropped_events))
    for link in span.links if span.links else ():
        link_flags = _SPAN_FLAGS_HAS_IS_REMOTE | (_SPAN_FLAGS_IS_REMOTE if link.context.is_remote else 0)
        parts.append(_field(b"\x6a", b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
                            + b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
                            + _attributes(b"\x22", link.attributes) + _uint(b"\x28", link.dropped_attributes)
                            + b"\x35" + _FIXED32(link_flags)))
    parts += [_uint(b"\x70", span.dropped_links), _field(b"\x7a", status_body), b"\x85\x01", _FIXED32(flags)]
    return b"".join(parts)


#: the severity number and text fields by their values (a handful of pairs in any process)
_severity_fields: dict[tuple[int | None, str | None], bytes] = {}


def _severity(severity: int | None, text: str | None) -> bytes:
    encoded = _severity_fields.get((severity, text))
    if encoded is None:
        encoded = _uint(b"\x10", severity) + _string(b"\x1a", text)
        if len(_severity_fields) < 256:
            _severity_fields[(severity, text)] = encoded
    return encoded


def _log(readable: Any) -> bytes:
    record = readable.log_record
    trace_flags = int(record.trace_flags) if record.trace_flags is not None else 0
    body = record.body
    return b"".join((
        b"\x09" + _FIXED64(record.timestamp) if record.timestamp else b"",
        _severity(getattr(record.severity_number, "value", None), record.severity_text),
        _field(b"\x2a", _field(b"\x0a", _text(body)) if type(body) is str else _any_value(body)),
        _attributes(b"\x32", record.attributes),
        _uint(b"\x38", readable.dropped_attributes),
        b"\x45" + _FIXED32(trace_flags) if trace_flags else b"",
        b"\x4a\x10" + record.trace_id.to_bytes(16, "big") if record.trace_id else b"",
        b"\x52\x08" + record.span_id.to_bytes(8, "big") if record.span_id else b"",
        b"\x59" + _FIXED64(record.observed_timestamp) if record.observed_timestamp else b"",
        _string(b"\x62", record.event_name),
    ))


def encode_spans(spans: Sequence[Any]) -> bytes:
    """An ``ExportTraceServiceRequest`` holding ``spans`` (``ReadableSpan``), serialised."""
    return _envelope(spans, _span, b"\x12")


def encode_logs(batch: Sequence[Any]) -> bytes:
    """An ``ExportLogsServiceRequest`` holding ``batch`` (``ReadableLogRecord``), serialised."""
    return _envelope(batch, _log, b"\x12")


class _Encoded:
    """Stands in for the SDK's request message: the exporter only asks it for its bytes."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def SerializeToString(self) -> bytes:
        return self._data

    def SerializePartialToString(self) -> bytes:
        return self._data


E = TypeVar("E", bound=type)


def with_fast_encoding(exporter_class: E, encoder_name: str, fast: Callable[[Sequence[Any]], bytes]) -> E:
    """A subclass of an SDK OTLP/HTTP exporter whose ``export`` uses ``fast`` for the global ``encoder_name``.

    The SDK's ``export`` function is re-bound to globals in which its encoder is replaced (nothing
    global is patched); a batch ``fast`` cannot encode goes to the SDK's encoder. If the SDK's
    ``export`` no longer refers to ``encoder_name``, the SDK's class is returned unchanged.
    """
    original = exporter_class.export  # type: ignore[attr-defined]
    sdk_encode = original.__globals__.get(encoder_name)
    if sdk_encode is None or encoder_name not in original.__code__.co_names:
        fell_back("fast encoding", f"{exporter_class.__qualname__}.export does not call {encoder_name}")
        return exporter_class

    def encode(batch: Sequence[Any]) -> Any:
        try:
            return _Encoded(fast(batch))
        except Unsupported:
            return sdk_encode(batch)

    export = types.FunctionType(original.__code__, {**original.__globals__, encoder_name: encode},
                                original.__name__, original.__defaults__, original.__closure__)
    export.__kwdefaults__ = original.__kwdefaults__
    export.__doc__ = original.__doc__
    return type(exporter_class.__name__, (exporter_class,), {  # type: ignore[return-value]
        "export": export, "__module__": __name__, "__qualname__": exporter_class.__qualname__})
