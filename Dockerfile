# syntax=docker/dockerfile:1
# modelport's image (docs/deploy.md). The build stage runs `make install`, the same recipe a
# machine without Docker runs, so the image holds what the tests ran against: every
# dependency at the version and hashes in the lock files, and llama.cpp built from source
# with the Makefile's CMake flags (x86-64-v3; elsewhere pass
# --build-arg LLAMA_CMAKE_ARGS="..."). tests/e2e/test_deploy.py keeps this file and the
# Makefile in step; no image is built by the tests.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# What `make install` needs besides Python: make, a C++ compiler and CMake for llama.cpp.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
# The virtual environment is made in place (.venv) and installs the project in editable
# mode: the runtime stage keeps both at this same path.
WORKDIR /opt/modelport
COPY Makefile pyproject.toml README.md requirements.lock requirements-data.lock ./
COPY src ./src
# Unset or empty: the Makefile's own flags. (Kept out of make's environment, where even an
# empty value would replace them.)
ARG LLAMA_CMAKE_ARGS
# pip's cache outlives the build: the llama.cpp wheel is built once.
RUN --mount=type=cache,target=/root/.cache/pip \
    env -u LLAMA_CMAKE_ARGS make install ${LLAMA_CMAKE_ARGS:+"LLAMA_CMAKE_ARGS=$LLAMA_CMAKE_ARGS"}

FROM ${PYTHON_IMAGE}
# llama.cpp's runtime libraries (OpenMP, the C++ library); the build tools stay behind.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libstdc++6 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 modelport \
    && useradd --system --uid 10001 --gid modelport --home-dir /var/lib/modelport \
        --no-create-home --shell /usr/sbin/nologin modelport \
    && install -d -o modelport -g modelport -m 0750 /var/lib/modelport
COPY --from=build /opt/modelport /opt/modelport
COPY deploy/healthcheck.py /opt/modelport/deploy/healthcheck.py
WORKDIR /opt/modelport
ENV PATH=/opt/modelport/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELPORT_HOST=0.0.0.0 \
    MODELPORT_PORT=8000 \
    MODELPORT_DATA_DIR=/var/lib/modelport
# The SQLite database, when no MODELPORT_DATABASE_URL names another.
VOLUME ["/var/lib/modelport"]
USER 10001:10001
EXPOSE 8000
# The process answers; compose.yaml asks /readyz of its replicas instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/modelport/deploy/healthcheck.py", "/healthz"]
# SIGTERM (Docker's default) lets the requests in flight finish; give `docker stop` the time
# they need (`-t 300`, compose's stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["modelport", "serve"]
