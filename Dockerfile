# The qm-otel demo image: the library installed with pip plus the examples.
# Used by the `demo` and `traffic` services of docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The package first (this layer is reused while only the examples change).
COPY pyproject.toml README.md ./
COPY src ./src
# the cli extra brings uvicorn, which serves the demo; pyproject.toml pins the tested OpenTelemetry release set
RUN pip install ".[cli]"

COPY examples ./examples

RUN useradd --system --uid 10001 --no-create-home app
USER app

ENV OTEL_SERVICE_NAME=qm-demo \
    OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318 \
    QM_OTEL_ENVIRONMENT=compose

EXPOSE 8000
CMD ["opentelemetry-instrument", "uvicorn", "qm_otel.cli.demo_service:app", "--host", "0.0.0.0", "--port", "8000"]
