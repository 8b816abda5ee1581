"""A span exporter another package might register: it writes each span's name to ``$FILE_EXPORTER_PATH``."""

from __future__ import annotations

import os
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class FileSpanExporter(SpanExporter):
    """Appends one line per span (its name) to the file the environment names."""

    def __init__(self) -> None:
        self.path = os.environ["FILE_EXPORTER_PATH"]

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as out:
            out.writelines(f"{span.name}\n" for span in spans)
        return SpanExportResult.SUCCESS
