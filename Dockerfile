# syntax=docker/dockerfile:1
# Imagegate's production image (docs/deployment.md). One image runs every role through the Makefile, the same
# commands as on a bare host: `make serve` (the default command), `make worker`, `make beat`, and the release's
# one-shot `manage.py migrate` (compose.yaml's `migrate` service).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the project's dependencies into a virtualenv at the path the Makefile uses (.venv) ---------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
RUN python -m venv /app/.venv
# Only pyproject.toml, so a change to the source does not reinstall the dependencies. pyproject names README.md as
# the long description, which must exist but is not needed here: an empty one keeps README edits from busting this
# layer. `.` is the project's pinned [project.dependencies]; the dev extras (pytest, moto, playwright, ...) stay
# out of the image. Every dependency ships a manylinux wheel for CPython 3.11, so this stage needs no compiler.
COPY pyproject.toml ./
RUN touch README.md && /app/.venv/bin/pip install .

# ---- runtime: the slim base, make, the virtualenv and the source, run as a non-root user ---------------------------
FROM ${PYTHON_IMAGE} AS runtime
# CMD is `make serve`, so the image needs make (bash and nproc, which the Makefile also uses, are in the base).
# Not pinned to a Debian revision: the base image's tag fixes the release, and a pinned revision disappears from
# the archive at its next security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 imagegate \
    && useradd --system --uid 10001 --gid imagegate --home-dir /app --no-create-home --shell /usr/sbin/nologin imagegate
# HOST=0.0.0.0: `make serve` binds 127.0.0.1 by default, which nothing outside the container could reach.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY . /app
# The Makefile's `install` target (a prerequisite of serve, worker and beat) reinstalls .venv whenever its stamp
# .venv/.installed is older than pyproject.toml. Touching the stamp after the source is copied makes it newer, so
# `make serve` uses the image's virtualenv as it is and never reaches for pip at start-up.
# The code stays root's and read-only to the app; the app may write only /app itself (celery beat keeps its
# `celerybeat-schedule` file in the working directory), staticfiles/ (`make serve` collects static files again at
# every start) and media/ (images, when no S3 bucket is configured).
RUN touch /app/.venv/.installed \
    && mkdir -p /app/staticfiles /app/media \
    && chown imagegate:imagegate /app /app/staticfiles /app/media
# Numeric, so that a runtime can verify it is not root (Kubernetes' runAsNonRoot) without reading /etc/passwd.
USER 10001:10001
# Static files are collected at build time with the production storage (hashed, compressed names), so the image
# carries them and a start only re-checks them. DJANGO_DEBUG=off selects that storage; settings refuse to load with
# DEBUG off and no secret key, so this one command gets a throwaway key. Neither stays in the image's environment.
RUN DJANGO_DEBUG=off DJANGO_SECRET_KEY=collectstatic-at-build-time-only-not-a-secret \
    python manage.py collectstatic --noinput --verbosity 0
EXPOSE 8000
# Does the process answer? GET /healthz is served before Django (config/observability/endpoints.py): no Host check,
# no HTTPS redirect, no dependency checked (readiness, /readyz, is the load balancer's question, not a restart's).
# compose.yaml gives the worker its own check and turns this one off for beat and migrate, which listen on no port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['PORT'], timeout=3)"]
CMD ["make", "serve"]
