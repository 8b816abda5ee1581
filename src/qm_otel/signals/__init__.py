"""One builder per signal, orchestrated by :mod:`qm_otel.launch.bootstrap`.

Compare the SDK's ``_init_tracing``, ``_init_metrics`` and ``_init_logging``:

- :mod:`~qm_otel.signals.resource`: the resource every signal carries;
- :mod:`~qm_otel.signals.exporters`: the exporter each signal's setting asks for;
- :mod:`~qm_otel.signals.encoding`: OTLP protobuf written straight to bytes for those exporters;
- :mod:`~qm_otel.signals.traces`, :mod:`~qm_otel.signals.metrics`, :mod:`~qm_otel.signals.logs`:
  the providers;
- :mod:`~qm_otel.signals.global_providers`: making them the process's global providers;
- :mod:`~qm_otel.signals.delivery`: a bounded buffer and a sender thread per signal;
  :mod:`~qm_otel.signals.drops`: what is dropped, counted and reported once;
- :mod:`~qm_otel.signals.histograms`: the request histograms merged into every reader's collection;
- :mod:`~qm_otel.signals.log_lane`: qm-otel's own log records into the batch processors;
- :mod:`~qm_otel.signals.switch_interval`: the interpreter's switch interval while exporting.
"""
