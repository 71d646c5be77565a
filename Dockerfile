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
# NVIDIA_VISIBLE_DEVICES=all: with the NVIDIA runtime the exporter sees the node's GPUs without
# requesting one (Kubernetes: the Helm chart sets it per container; without the runtime, or where
# it ignores the variable, infermeter_nvml_up is 0 and everything else works).
ENV NVIDIA_DRIVER_CAPABILITIES=utility \
    NVIDIA_VISIBLE_DEVICES=all \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The wheel built above by path (exactly this build, no extras), its dependencies from /wheels
# only; bind-mounted from the build stage, so no layer keeps the wheels.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/infermeter-*.whl
USER 65532:65532
EXPOSE 8090 8091
ENTRYPOINT ["infermeter"]
CMD ["serve"]
