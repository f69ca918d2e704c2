# Sourced by the scripts: make sure .venv exists and holds the project and its dev tools.
# Works on a fresh Debian 12 machine that has only python3 (installs python3-venv if needed).

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$REPO/.venv"

ensure_venv() {
    local stamp_want stamp_have=""
    stamp_want="$(cat "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    [ -f "$VENV/.stamp" ] && stamp_have="$(cat "$VENV/.stamp")"
    if [ -x "$VENV/bin/python" ] && [ "$stamp_want" = "$stamp_have" ]; then
        return 0
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        echo "autoscaler: python3 is required (apt-get install -y python3)" >&2
        return 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
            rm -rf "$VENV"
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
                echo "autoscaler: installing python3-venv" >&2
                apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
                python3 -m venv "$VENV"
            else
                echo "autoscaler: python3 -m venv failed; install python3-venv" >&2
                return 1
            fi
        fi
    fi
    echo "autoscaler: installing the project into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -e "$REPO[dev]" >&2
    echo "$stamp_want" > "$VENV/.stamp"
}
