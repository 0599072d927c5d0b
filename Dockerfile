# imagegate container image: small, non-root, multi-stage. Build from the repository root:
#   docker build -t imagegate .
# The first stage builds a virtualenv with the package and its dependencies (wheels only; no
# compiler, no Node); the second copies just that virtualenv onto a slim Python base.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/imagegate
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN /opt/imagegate/bin/pip install --only-binary=:all: /src

FROM python:3.11-slim
ENV PATH=/opt/imagegate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    IMAGEGATE_CONFIG=/etc/imagegate/imagegate.yaml
RUN useradd --system --uid 10001 --home-dir /var/lib/imagegate --create-home imagegate
COPY --from=build /opt/imagegate /opt/imagegate
USER 10001
WORKDIR /var/lib/imagegate
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# `serve` migrates first (under an advisory lock on PostgreSQL: replicas may start together).
CMD ["imagegate", "serve", "--host", "0.0.0.0", "--port", "8000"]
