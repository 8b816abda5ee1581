"""The installed OpenTelemetry instrumentations qm-otel loads for the libraries a service uses.

- :mod:`~qm_otel.instrumentation.libraries`: every installed instrumentation, on both launch
  paths, now or at its library's first import; statements sanitized on the way into spans.
"""
