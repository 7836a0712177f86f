# syntax=docker/dockerfile:1
# The bot's image: Python 3.11 slim, no compilers in the final stage, runs as non-root,
# helm pinned by version and checksum (the same version the tests build).
# Supply chain: the base image is pinned by digest (the multi-arch index of the tag next to it; refresh
# both with `docker buildx imagetools inspect python:3.11-slim-bookworm`), and every Python package,
# build tools included, comes from requirements.lock with its hashes (pip --require-hashes, wheels only).

FROM python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16 AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
# the project itself, built with the locked setuptools and wheel, nothing more fetched
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation --no-index .

FROM python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16 AS helm
ARG HELM_VERSION=3.16.2
ARG HELM_SHA256=9318379b847e333460d33d291d4c088156299a26cd93d570a7f5d0c36e50b5bb
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# checkov:skip=CKV_DOCKER_4:fetching helm's release by URL; its sha256 is verified on the next line
ADD https://get.helm.sh/helm-v${HELM_VERSION}-linux-amd64.tar.gz /tmp/helm.tar.gz
RUN echo "${HELM_SHA256}  /tmp/helm.tar.gz" | sha256sum -c - \
    && tar -xzf /tmp/helm.tar.gz -C /tmp \
    && install -m 0755 /tmp/linux-amd64/helm /usr/local/bin/helm

FROM python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16
LABEL org.opencontainers.image.title="erp-chatops" \
      org.opencontainers.image.description="Slack bot for the ERP platform's delivery"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HELM_BIN=/usr/local/bin/helm \
    HELM_CACHE_HOME=/tmp/helm/cache \
    HELM_CONFIG_HOME=/tmp/helm/config \
    HELM_DATA_HOME=/tmp/helm/data \
    ERP_CHART=/app/charts/erp \
    PORT=3000
RUN groupadd --system --gid 10001 erp && useradd --system --uid 10001 --gid erp --no-create-home erp
COPY --from=build /opt/venv /opt/venv
COPY --from=helm /usr/local/bin/helm /usr/local/bin/helm
# per-service rollbacks re-apply the release with this chart (helm upgrade --reuse-values)
COPY charts/erp /app/charts/erp
USER 10001:10001
EXPOSE 3000 9102
HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "-c", "import urllib.request,os; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT','3000'), timeout=2)"]
ENTRYPOINT ["python", "-m", "bot", "serve"]
