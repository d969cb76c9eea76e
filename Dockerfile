# The image the Helm chart runs: inference-exporter on a slim Python 3.11, as an unprivileged user.
#   docker build -t inference-exporter:0.1.0 .
#   docker run --rm -p 9898:9898 inference-exporter:0.1.0 run --demo --listen :9898
#   docker run --rm -p 9898:9898 -e INFERENCE_EXPORTER_DEMO=true inference-exporter:0.1.0   (any option as INFERENCE_EXPORTER_*)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build the wheel and install it, with its dependencies, into a virtual environment.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md config.example.yaml ./
COPY exporter ./exporter
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/inference-exporter \
 && /opt/inference-exporter/bin/pip install /dist/*.whl

# The runtime: the same base (the venv's python links to it), the venv, nothing else.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="inference-exporter" \
      org.opencontainers.image.description="One Prometheus target for the inference servers and GPUs of a host" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --system --uid 65532 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin exporter
COPY --from=build /opt/inference-exporter /opt/inference-exporter
# PYTHONFAULTHANDLER: a hung process killed with SIGABRT prints every thread's traceback.
ENV PATH=/opt/inference-exporter/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
USER 65532:65532
EXPOSE 9898
ENTRYPOINT ["inference-exporter"]
# The bundled example config on every interface; the Helm chart passes its own --config.
CMD ["run", "--listen", ":9898"]
