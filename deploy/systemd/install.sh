#!/usr/bin/env bash
# Install the Stalwart autoscaler as a systemd service on a Docker Swarm manager.
#
#   deploy/systemd/install.sh --dry-run       print every change it would make; change nothing
#   sudo deploy/systemd/install.sh            install or upgrade (safe to run again)
#
# Options:
#   --source PATH   a wheel (*.whl) or a checkout of the repository to install from
#                   (default: the repository holding this script)
#   --config FILE   the config to install when /etc/stalwart-autoscaler/config.yaml does not
#                   exist yet (default: the bundled Stalwart example with dry_run: true, so
#                   nothing is scaled until you edit it); an existing one is kept
#   --no-start      install and enable, but do not start or restart the service
#   --dry-run       print the commands instead of running them
#   --print-config  print the config it would install when none exists, and exit
# PIP_ARGS (environment) is passed to pip, e.g. PIP_ARGS="--no-index --find-links /srv/wheels"
# for an offline manager.
#
# What it does, each step only when needed:
#   1. the system user `stalwart-autoscaler`, in the `docker` group (the socket's group: that
#      membership is root-equivalent on the host, hence the unit's hardening)
#   2. a root-owned venv in /opt/stalwart-autoscaler/venv (the service cannot modify its code)
#   3. /etc/stalwart-autoscaler (0750) with config.yaml and autoscaler.env (0640
#      root:stalwart-autoscaler; never overwritten), then `autoscaler check-config` as the user
#   4. the unit in /etc/systemd/system, daemon-reload, enable --now (restart on an upgrade)
# Run it on every manager with `leader_election: {mode: swarm}` in the config.
set -euo pipefail
umask 022  # the venv must be readable by the service user whatever root's umask is

NAME=stalwart-autoscaler
USER_NAME=stalwart-autoscaler
PREFIX=/opt/stalwart-autoscaler
ETC=/etc/stalwart-autoscaler
UNIT_DIR=/etc/systemd/system
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

dry_run=0
start=1
source_path=$REPO
config_file=""

print_config=0

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --print-config) print_config=1 ;;
        --no-start) start=0 ;;
        --source) [ $# -ge 2 ] || die "--source needs a path"; source_path=$2; shift ;;
        --config) [ $# -ge 2 ] || die "--config needs a file"; config_file=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; echo "install.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

# The config to install: the operator's own as given, or the bundled example switched to
# dry_run: true (its services are examples; a daemon started with it must not scale anything).
bundled_example=$REPO/autoscaler/data/stalwart-example.yaml
config_text() {
    if [ -n "$config_file" ]; then
        cat "$config_file"
        return
    fi
    local text
    text=$(sed -E 's/^dry_run: *false\b.*$/dry_run: true  # installed without --config: decide, never scale, until you set it to false/' "$bundled_example")
    grep -qE '^dry_run: true\b' <<<"$text" || die "could not set dry_run: true in $bundled_example"
    printf '%s\n' "$text"
}
if [ "$print_config" = 1 ]; then
    [ -z "$config_file" ] || [ -f "$config_file" ] || die "no such config: $config_file"
    config_text
    exit 0
fi

# Run a command, or print it (shell-quoted) in --dry-run.
run() {
    if [ "$dry_run" = 1 ]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}
note() { echo "== $*"; }

if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (or with --dry-run to see what it would do)"
fi
[ "$dry_run" = 1 ] && note "dry run: nothing is changed"

# --------------------------------------------------------------------------- checks
unit_src=$HERE/$NAME.service
env_src=$HERE/autoscaler.env.example
[ -f "$unit_src" ] || die "missing $unit_src"
[ -f "$env_src" ] || die "missing $env_src"
case "$source_path" in
    *.whl) [ -f "$source_path" ] || die "no such wheel: $source_path" ;;
    *) [ -f "$source_path/pyproject.toml" ] || die "$source_path is neither a wheel nor the repository" ;;
esac
if [ -n "$config_file" ]; then
    [ -f "$config_file" ] || die "no such config: $config_file"
    config_src=$config_file
else
    [ -f "$bundled_example" ] || die "missing $bundled_example"
    config_src=$(mktemp "${TMPDIR:-/tmp}/stalwart-autoscaler-config.XXXXXX")
    trap 'rm -f "$config_src"' EXIT
    config_text >"$config_src"
fi
command -v systemctl >/dev/null || die "systemctl not found: this installs a systemd service"
python=${PYTHON:-python3}
command -v "$python" >/dev/null || die "$python not found (Python >= 3.11 with venv is needed)"
"$python" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' \
    || die "$python is older than 3.11 or lacks the venv module"
if ! getent group docker >/dev/null; then
    die "no docker group: install Docker (the daemon reaches Swarm through its socket)"
fi
if command -v docker >/dev/null \
        && [ "$(timeout 20 docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" != true ]; then
    echo "warning: this node is not a Swarm manager; the daemon will stand by" >&2
fi

# --------------------------------------------------------------------------- 1. user
note "user $USER_NAME"
if ! getent passwd "$USER_NAME" >/dev/null; then
    run useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "Stalwart autoscaler" "$USER_NAME"
fi
if ! id -nG "$USER_NAME" 2>/dev/null | tr ' ' '\n' | grep -qx docker; then
    run usermod --append --groups docker "$USER_NAME"
fi

# --------------------------------------------------------------------------- 2. venv
note "venv $PREFIX/venv from $source_path"
run install -d -m 0755 -o root -g root "$PREFIX"
if [ ! -x "$PREFIX/venv/bin/python" ]; then
    run "$python" -m venv "$PREFIX/venv"
fi
# shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
run "$PREFIX/venv/bin/pip" install --quiet --upgrade ${PIP_ARGS:-} "$source_path"
if [ -f "$REPO/README.md" ]; then
    run install -m 0644 -o root -g root "$REPO/README.md" "$PREFIX/README.md"
fi

# --------------------------------------------------------------------------- 3. config
note "config in $ETC"
run install -d -m 0750 -o root -g "$USER_NAME" "$ETC"
if [ ! -e "$ETC/config.yaml" ]; then
    if [ -z "$config_file" ]; then
        note "no --config: installing the bundled example with dry_run: true (see --print-config)"
    fi
    run install -m 0640 -o root -g "$USER_NAME" "$config_src" "$ETC/config.yaml"
else
    echo "keeping the existing $ETC/config.yaml"
fi
if [ ! -e "$ETC/autoscaler.env" ]; then
    run install -m 0640 -o root -g "$USER_NAME" "$env_src" "$ETC/autoscaler.env"
else
    echo "keeping the existing $ETC/autoscaler.env"
fi
# As the service user: proves the file is readable by it and valid before the unit starts.
run runuser -u "$USER_NAME" -- "$PREFIX/venv/bin/autoscaler" check-config "$ETC/config.yaml"

# --------------------------------------------------------------------------- 4. unit
note "unit $UNIT_DIR/$NAME.service"
run install -m 0644 -o root -g root "$unit_src" "$UNIT_DIR/$NAME.service"
run systemctl daemon-reload
if [ "$start" = 0 ]; then
    run systemctl enable "$NAME.service"
elif systemctl is-active --quiet "$NAME.service" 2>/dev/null; then
    run systemctl enable "$NAME.service"
    run systemctl restart "$NAME.service"  # an upgrade: new code needs a new process
else
    run systemctl enable --now "$NAME.service"
fi
note "done: systemctl status $NAME; journalctl -u $NAME -f; systemctl reload $NAME after editing $ETC/config.yaml"
