#!/usr/bin/env bash
# The README's demo command:
#
#   bash scripts/demo.sh [DEMO_ARGS...]
#
# Creates/reuses the virtualenv .venv, installs mailpool[demo] into it
# (editable; re-installed only when pyproject.toml changes), then runs
# `python -m mailpool demo [DEMO_ARGS...]`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
VENV=$ROOT/.venv

log() { printf 'demo.sh: %s\n' "$*" >&2; }

# Serialize with concurrent test.sh/demo.sh runs from this checkout (same
# lock file as scripts/test.sh): pip must not run twice into one venv.
if command -v flock >/dev/null 2>&1; then
    exec 9>>"/tmp/mailpool-venv-$(id -u)-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1).lock"
    flock 9
fi
if ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
    log "creating virtualenv $VENV"
    python3 -m venv --clear "$VENV" ||
        { log "error: 'python3 -m venv' failed (Debian: apt-get install python3-venv)"; exit 1; }
fi
stamp=$VENV/.mailpool-demo.stamp
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$VENV/bin/python" -VV)"
if [[ ! -f $stamp || $(<"$stamp") != "$want" ]]; then
    log "installing mailpool[demo] into .venv..."
    "$VENV/bin/python" -m pip install -qq --disable-pip-version-check -e '.[demo]'
    printf '%s\n' "$want" >"$stamp"
fi
exec 9>&- # release the lock before running the demo

exec "$VENV/bin/python" -m mailpool demo "$@"
