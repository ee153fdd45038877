# syntax=docker/dockerfile:1
# The API server. Production talks to MongoDB (MONGODB_URI); see docker-compose.yml.
#
# The base image is pinned by digest, so a rebuild gets the same image. To move to a newer one:
#   docker pull python:3.11-slim
#   docker inspect --format '{{index .RepoDigests 0}}' python:3.11-slim
# (or `docker buildx imagetools inspect python:3.11-slim`), put the new digest in PYTHON_IMAGE
# below, rebuild, and run the tests against the image.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Every dependency at the version in requirements.lock (`make lock` refreshes it).
COPY pyproject.toml setup.cfg README.md requirements.lock ./
COPY tornado_app ./tornado_app
COPY handlers ./handlers
RUN pip install --no-cache-dir --constraint requirements.lock .

FROM ${PYTHON_IMAGE}
# A fixed numeric id, so a volume's owner and `USER` mean the same on every host.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY run.py ./
RUN mkdir -p /app/var && chown 10001:10001 /app/var
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8888 \
    DATA_DIR=/app/var
USER 10001:10001
EXPOSE 8888
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8888'), timeout=2)"]
STOPSIGNAL SIGTERM
CMD ["tornado-app", "serve"]
