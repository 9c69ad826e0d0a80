# syntax=docker/dockerfile:1
# One image for every OCW process; the command picks the role (worker, listen, setup, dashboard,
# status, ...). Dependencies come from deploy/constraints.txt (exact pins of the runtime
# dependencies, `make lock`), the code is installed on top without resolving anything again.
# No secret is read at build time: settings and keys come from the environment at run time
# (compose's env_file, systemd's EnvironmentFile), see docs/deploy.md.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OCW_HOME=/data \
    HOME=/data \
    MPLBACKEND=Agg

# The user the processes run as, and its state directory: a fresh named volume mounted on
# /data takes this owner, so the non-root processes can write it.
RUN groupadd --system --gid 10001 ocw \
    && useradd --system --uid 10001 --gid ocw --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin ocw \
    && mkdir -p /data \
    && chown ocw:ocw /data \
    && chmod 0750 /data

WORKDIR /app

# Dependencies first (their layer survives code changes), exactly as pinned.
COPY deploy/constraints.txt /app/constraints.txt
RUN pip install --no-cache-dir -r /app/constraints.txt

COPY pyproject.toml README.md ./
COPY trading trading
COPY signals signals
COPY activities activities
COPY workflows workflows
COPY workers workers
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && rm -rf /app/build /app/*.egg-info

COPY --chmod=0755 deploy/healthcheck.py /usr/local/bin/ocw-healthcheck

USER ocw:ocw
VOLUME ["/data"]
WORKDIR /data

# worker / listener: their metrics endpoint shows a started Temporal worker; dashboard: it
# answers; other commands pass (docs/deploy.md). Compose sets the role explicitly.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["ocw-healthcheck"]

ENTRYPOINT ["ocw"]
CMD ["--help"]
