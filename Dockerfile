# chat-store container image.
#
#   docker build -t chat-store .
#   docker run -p 8000:8000 -v chat-store-data:/data chat-store
#
# The builder stage installs the environment exactly as uv.lock pins it; the final stage holds
# only that virtual environment (no uv, no compiler, no source tree) and runs as uid 10001.

ARG PYTHON_VERSION=3.11

# --- builder: resolve and install from the lock file -------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS builder

ARG UV_VERSION=0.13.8
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install "uv==${UV_VERSION}"

WORKDIR /app

# Dependencies first: this layer is rebuilt only when pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-project

# Then the project itself, installed into the environment as a regular package (not a link to
# /app/src), so the environment alone is enough to run it.
COPY README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# --- runtime -----------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime

LABEL org.opencontainers.image.title="chat-store" \
      org.opencontainers.image.description="Async REST service that stores LLM chat history." \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --system --gid 10001 chat-store \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin chat-store \
    && mkdir -p /data \
    && chown 10001:10001 /data

# The virtual environment keeps its path: its scripts start with #!/app/.venv/bin/python.
COPY --from=builder /app/.venv /app/.venv
COPY docker/entrypoint.sh /app/docker/entrypoint.sh
RUN chmod 0755 /app/docker/entrypoint.sh

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/data \
    PORT=8000

WORKDIR /app
# The SQLite database of the embedded default (and, outside production, the generated JWT
# secret) live here.
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000

# Liveness only (the process answers); /health/ready also checks the database.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/health', timeout=4)"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]
