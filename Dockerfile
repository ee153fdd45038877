# syntax=docker/dockerfile:1
# The API server. Production talks to MongoDB (MONGODB_URI); see docker-compose.yml.

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml setup.cfg README.md ./
COPY tornado_app ./tornado_app
COPY handlers ./handlers
RUN pip install --no-cache-dir --upgrade pip && pip install --no-cache-dir .

FROM python:3.11-slim
RUN groupadd --system app && useradd --system --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY run.py ./
RUN mkdir -p /app/var && chown app:app /app/var
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8888 \
    DATA_DIR=/app/var
USER app
EXPOSE 8888
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8888'), timeout=2)"]
STOPSIGNAL SIGTERM
CMD ["python", "run.py"]
