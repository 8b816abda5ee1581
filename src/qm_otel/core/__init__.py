"""The core: what every other room reads, and nothing that serves a request or writes a record.

It imports no web framework, HTTP client or tooling library (import-linter's fourth contract), and
of qm-otel only the state room below it. Two layers inside:

- the settings and the rules they drive: :mod:`~qm_otel.core.config` (the settings table and
  resolver; :mod:`~qm_otel.core.setup_options` is ``setup()``'s typed keywords, generated from it),
  :mod:`~qm_otel.core.conventions` (``conventions.toml`` at run time),
  :mod:`~qm_otel.core.correlation` (correlation IDs as trace IDs), :mod:`~qm_otel.core.sampling`,
  :mod:`~qm_otel.core.redaction` (the only redaction), :mod:`~qm_otel.core.work_context` (one base
  for ``with``/``async with``/decorator objects; context into executors);
- below them, what qm-otel knows of OpenTelemetry itself: :mod:`~qm_otel.core.instruments` (every
  qm-otel instrument, made one way), :mod:`~qm_otel.core.otel_environment` (the checks of the SDK's
  own ``OTEL_*`` variables) and :mod:`~qm_otel.core.sdk_internals` (every private SDK name qm-otel
  reads, probed at ``setup()``).
"""
