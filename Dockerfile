# syntax=docker/dockerfile:1
# infermeter: Prometheus exporter and observability sidecar for LLM inference.
# Build: docker build -t infermeter .   Run: docker run --rm -p 8090:8090 -p 8091:8091 infermeter serve

# --- build: wheels for infermeter and its dependencies -----------------------------------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: the wheels only, a numeric non-root user, nothing written at run time ------------
FROM python:3.11-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="infermeter" \
      org.opencontainers.image.description="Prometheus exporter and observability sidecar for LLM inference" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/infermeter/infermeter"
# NVML (libnvidia-ml.so.1) is injected by the NVIDIA container toolkit; "utility" is all it needs.
ENV NVIDIA_DRIVER_CAPABILITIES=utility \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels infermeter \
    && rm -rf /wheels
USER 65532:65532
EXPOSE 8090 8091
ENTRYPOINT ["infermeter"]
CMD ["serve"]
