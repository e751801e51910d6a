# tether in a container: runtime dependencies only, a non-root user, the log in a volume.
#
#   docker build -t tether .
#   docker run -p 4437:4437 -v tether-data:/data -e TETHER_API_KEYS=... tether
#
# Options go after the image name (`tether serve --sqlite-sync full`) or in
# TETHER_* variables; docs/deploy.md has the rest.

# The wheel is built in a stage of its own, so the image holds no build tools or sources.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# `tether` without extras: what `tether serve` needs, no test or lint tools.
# tini as PID 1: it forwards signals to tether and reaps the orphans of killed agent and
# tool processes (a process's children outlive it when it is killed).
RUN apt-get update && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home tether \
 && mkdir /data && chown tether:tether /data
USER tether
WORKDIR /data
# Listen on every interface (the container's port is what is published), keep the
# SQLite log in the volume. Without TETHER_API_KEYS tether warns that anyone who
# reaches the port may use it: set keys for anything but a local try.
ENV TETHER_HOST=0.0.0.0 \
    TETHER_PORT=4437 \
    TETHER_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 4437
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4437/readyz', timeout=2)"]
# SIGTERM (docker stop) drains: running model calls get --shutdown-grace (10 s) to
# finish, so give docker stop a longer timeout than that (docker stop -t 30).
ENTRYPOINT ["tini", "--", "tether"]
CMD ["serve"]
