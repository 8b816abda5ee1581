"""The two ways in: ``setup()`` and ``opentelemetry-instrument``.

- :mod:`~qm_otel.launch.bootstrap`: ``setup()`` / ``shutdown()`` and the ``Telemetry`` handle; runs
  the signal builders in order, fills the state room, hangs the flush on lifespan end, SIGTERM and
  exit. Only the public facade (``qm_otel``) imports it.
- :mod:`~qm_otel.launch.distro`: ``opentelemetry-instrument``'s distro and configurator (entry
  points in ``pyproject.toml``); calls the public ``qm_otel.setup()``.
"""
