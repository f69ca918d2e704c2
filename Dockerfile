# stalwart-autoscaler container image.
#
# Build it with `scripts/build-image` (it makes the wheels this file installs, adds the
# revision label and runs `docker build`). By hand:
#
#   .venv/bin/pip wheel . -w dist/wheels       # on the host: the project and every dependency
#   docker build -t stalwart-autoscaler:0.1.0 .
#   docker build --build-arg BASE_IMAGE=stalwart-autoscaler-base:bookworm -t ... .
#
# No step reaches the network when the base image already has python3 (as the one
# `scripts/base-image` makes with debootstrap does): the wheels come from the build context
# (dist/wheels/, the only thing .dockerignore lets in) and pip runs with --no-index. On a base
# without python3 (the default, debian:bookworm-slim) the first stage installs it with
# apt-get, which needs a Debian mirror.
#
# At run time nothing is written to the image: the root filesystem may be read-only
# (`docker run --read-only`, `read_only: true` in a stack, readOnlyRootFilesystem). Bytecode
# is compiled at build time and PYTHONDONTWRITEBYTECODE=1 keeps Python from writing more.
# A small tmpfs on /tmp is recommended for libraries that want a temporary file; the daemon
# itself needs none. matplotlib (the optional `plot` extra) is not installed, so MPLCONFIGDIR
# does not matter: only `simulate` and `backtest --plot` draw PNGs, and in the container
# they say so (simulate prints its table and a note; `--plot none` skips the note).
#
# Few instructions on purpose: the classic builder commits a layer for every instruction, and
# on the vfs storage driver every layer is a full copy of the filesystem. The image's
# metadata therefore lives in the small first stage, before the virtualenv is added, and
# org.opencontainers.image.version is written here (a test compares it with pyproject.toml)
# rather than through a build argument, which would cost another instruction.

ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- python: the shared base
FROM ${BASE_IMAGE} AS python
# python3 when the base lacks it, and the unprivileged user 10001 (no login shell, a home
# that does not exist, so nothing is written there).
RUN set -eu; \
    if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*; \
    fi; \
    groupadd --gid 10001 autoscaler; \
    useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin autoscaler
LABEL org.opencontainers.image.title="stalwart-autoscaler" \
      org.opencontainers.image.description="Autoscaling control loop for Stalwart Mail Server clusters on Docker Swarm and Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8
USER 10001:10001
EXPOSE 9464
# /healthz answers 200 while the loop ticks (a Prometheus outage does not fail it). Python's
# stdlib only, no curl. It asks the address in AUTOSCALER_LISTEN (the environment override of
# `listen`) when that is set, else 127.0.0.1:9464: set AUTOSCALER_LISTEN when the daemon
# listens on another port. A wildcard host (0.0.0.0, ::) is asked on 127.0.0.1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request as u; h, _, p = os.environ.get('AUTOSCALER_LISTEN', '127.0.0.1:9464').rpartition(':'); h = h.strip('[]'); h = '127.0.0.1' if h in ('', '0.0.0.0', '::') else h; h = f'[{h}]' if ':' in h else h; raise SystemExit(u.urlopen(f'http://{h}:{p}/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["/opt/venv/bin/autoscaler"]
CMD ["run", "--config", "/etc/stalwart-autoscaler/config.yaml"]

# ---------------------------------------------------------------- build: the virtualenv
# Straight from the base (not from `python`): no metadata to undo, and the same python3 at the
# same path as the image's, which the virtualenv's interpreter links to.
FROM ${BASE_IMAGE} AS build
COPY dist/wheels/ /wheels/
# python3 and python3-venv are installed first when the base lacks them (this stage only).
# --no-deps: dist/wheels/ is the complete, pinned set (scripts/build-image resolves it on the
# host against the project venv's versions), so pip installs exactly those files.
# Then: pip and setuptools go (not needed to run); kubernetes.aio goes (an asyncio copy of the
# client, about 70 MB with bytecode, that the daemon never imports); everything is compiled
# to bytecode that is valid whatever the files' timestamps (unchecked-hash), so a read-only
# root filesystem costs no start-up time. Last, a smoke test of the installed command.
RUN set -eu; \
    ls /wheels/stalwart_autoscaler-*.whl >/dev/null; \
    if ! python3 -m venv /opt/venv >/dev/null 2>&1; then \
        rm -rf /opt/venv; apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv; \
        python3 -m venv /opt/venv; \
    fi; \
    /opt/venv/bin/python -m pip install --no-cache-dir --no-index --no-deps \
        --disable-pip-version-check --no-compile /wheels/*.whl; \
    /opt/venv/bin/python -m pip uninstall -y -q pip setuptools; \
    site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"; \
    rm -rf "$site/kubernetes/aio"; \
    find /opt/venv -name __pycache__ -type d -prune -exec rm -rf {} +; \
    /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash "$site" \
        >/dev/null; \
    /opt/venv/bin/autoscaler --help >/dev/null; \
    /opt/venv/bin/python -c 'import autoscaler.cli, autoscaler.loop, docker, kubernetes.client'

# ---------------------------------------------------------------- the image
FROM python
COPY --from=build /opt/venv /opt/venv
