# qtune: vLLM endpoint (port 8000) + web UI (port 7860) with the embedded model and the
# shipped adapters. The image runs exactly the Makefile's steps (`make setup`, `make run`).
#
#   GPU (default):  docker build -t qtune .
#                   docker run --gpus all -p 8000:8000 -p 7860:7860 -e QTUNE_API_KEY=... qtune
#   CPU:            docker build --build-arg QTUNE_DEVICE=cpu -t qtune-cpu .
#                   docker run -p 8000:8000 -p 7860:7860 -e QTUNE_API_KEY=... qtune-cpu
#
# The servers bind 0.0.0.0 inside the container: set QTUNE_API_KEY so the endpoint is not
# open to anyone who can reach the published port (see docs/serving.md).
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
    QTUNE_HOME=/opt/qtune-home \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /opt/qtune
COPY . .
# The same set-up as on a workstation: venv, pinned packages, the prepared embedded model
# (baked into the image, so the container starts without network access).
RUN QTUNE_DEVICE=${QTUNE_DEVICE} make setup
EXPOSE 8000 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s \
    CMD ["/opt/qtune/docker/healthcheck.sh"]
# tini forwards `docker stop`'s SIGTERM to make and qtune (-g: the whole group), so vLLM
# shuts down cleanly instead of being killed after the grace period.
ENTRYPOINT ["tini", "-g", "--"]
CMD ["make", "run", "HOST=0.0.0.0"]
