"""Example services instrumented by qm-otel."""
