"""One builder per signal, orchestrated by :mod:`qm_otel.bootstrap`.

Compare the SDK's ``_init_tracing``, ``_init_metrics`` and ``_init_logging``:

- :mod:`~qm_otel.signals.resource`: the resource every signal carries;
- :mod:`~qm_otel.signals.exporters`: the exporter each signal's setting asks for;
- :mod:`~qm_otel.signals.encoding`: OTLP protobuf written straight to bytes for those exporters;
- :mod:`~qm_otel.signals.traces`, :mod:`~qm_otel.signals.metrics`, :mod:`~qm_otel.signals.logs`:
  the providers;
- :mod:`~qm_otel.signals.globals`: making them the process's global providers.
"""
