# syntax=docker/dockerfile:1
#
# canrun's webhook image: multi-stage, non-root (uid 65532), read-only-root friendly.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/canrun:0.1.0 --push .
#
# Reproducible builds pin the base image by digest. Look the digest up once (it names the
# multi-arch index, so one digest serves both platforms) and pass it, or edit the default:
#   docker buildx imagetools inspect python:3.11-slim-bookworm   # "Digest: sha256:..."
#   docker buildx build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> ...
# (No digest is written here because this file was written without network access; see docs/install.md.)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with canrun and its pinned dependencies ---------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/canrun
WORKDIR /src
# dependencies first: this layer is reused until requirements.txt changes
COPY requirements.txt ./
RUN /opt/canrun/bin/pip install -r requirements.txt
COPY pyproject.toml README.md ./
COPY canrun ./canrun
# canrun/rules links to docs/rules: the rule pages `canrun explain` prints, packaged with the code
COPY docs/rules ./docs/rules
RUN /opt/canrun/bin/pip install --no-deps . \
 # byte-compile now: the root filesystem is read-only at run time, so Python cannot write __pycache__ there
 && /opt/canrun/bin/python -m compileall -q /opt/canrun/lib \
 && /opt/canrun/bin/canrun --version

# ---- runtime ----------------------------------------------------------------------------------------------
# Same base as the build stage, so the venv's interpreter symlink (/opt/canrun/bin/python ->
# /usr/local/bin/python3.11) and the console script's #! line resolve here too.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="canrun" \
      org.opencontainers.image.description="Validating admission webhook that predicts ContainerCannotRun" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/canrun /opt/canrun
# The cache directory exists and belongs to the runtime user even without a volume mounted over it;
# /usr/local/bin/canrun is the absolute ENTRYPOINT (a symlink to the venv's console script).
RUN ln -s /opt/canrun/bin/canrun /usr/local/bin/canrun \
 && mkdir -p /var/cache/canrun \
 && chown 65532:65532 /var/cache/canrun
ENV PATH=/opt/canrun/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    CANRUN_CACHE_DIR=/var/cache/canrun
# numeric, so runAsNonRoot can verify it without an /etc/passwd lookup
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/canrun", "serve"]
