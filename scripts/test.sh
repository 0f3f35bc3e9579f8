#!/usr/bin/env bash
# The project's one test command:
#
#   bash scripts/test.sh [PYTEST_ARGS...]
#
# 1. creates/reuses the virtualenv .venv and installs mailpool[dev] into it
#    (editable; re-installed only when pyproject.toml or __version__ changes);
# 2. unless MAILPOOL_TEST_POSTGRES_URL is already set, starts a throwaway
#    PostgreSQL (scripts/postgres.sh) on a free port in a temp dir and exports
#    MAILPOOL_TEST_POSTGRES_URL; it is stopped and deleted on exit, including
#    on failure or Ctrl-C. If PostgreSQL is unavailable this is fatal when
#    CI=true, otherwise a warning (the PostgreSQL tests then skip);
# 3. runs the quality gates in order, stopping at the first failure:
#    ruff check, ruff format --check, mypy, mypy on the docs' snippets and
#    examples (with and without pydantic's plugin), mkdocs build --strict,
#    python -m build + twine check (MAILPOOL_DIST then names the built
#    files, for tests/test_packaging.py), pytest (last, so its summary line
#    is the last thing printed). The exit code is that of the failing gate
#    (pytest's 5 = "no tests collected" counts as a failure), else 0.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
VENV=$ROOT/.venv

log() { printf 'test.sh: %s\n' "$*" >&2; }
header() { printf '==> %s\n' "$*"; }
is_ci() { [[ ${CI:-} == true || ${CI:-} == 1 ]]; }

# --- 1. virtualenv ----------------------------------------------------------
setup_venv() {
    # Serialize concurrent runs from the same checkout (pip is not safe to run
    # twice at once into one venv).
    if command -v flock >/dev/null 2>&1; then
        local lock
        lock="/tmp/mailpool-venv-$(id -u)-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1).lock"
        exec 9>>"$lock"
        flock 9
    fi
    if ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
        log "creating virtualenv $VENV"
        python3 -m venv --clear "$VENV" ||
            { log "error: 'python3 -m venv' failed (Debian: apt-get install python3-venv)"; exit 1; }
    fi
    # Install only when pyproject.toml (or the interpreter) changed since the
    # last successful install; the editable install picks up src/ changes.
    local stamp=$VENV/.mailpool-dev.stamp want
    # (__version__ too: the build reads it, so the installed metadata has it.)
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) $(grep '^__version__' src/mailpool/__init__.py) $("$VENV/bin/python" -VV)"
    if [[ ! -f $stamp || $(<"$stamp") != "$want" ]]; then
        log "installing mailpool[dev] into .venv..."
        "$VENV/bin/python" -m pip install -qq --disable-pip-version-check -e '.[dev]'
        printf '%s\n' "$want" >"$stamp"
    fi
    if command -v flock >/dev/null 2>&1; then exec 9>&-; fi
}

# --- 2. throwaway PostgreSQL ------------------------------------------------
PGDIR=
cleanup() {
    local rc=$?
    trap '' INT TERM HUP PIPE # don't let a second Ctrl-C skip the cleanup
    if [[ -n $PGDIR ]]; then
        # Silent, so that pytest's summary stays the last line printed.
        bash "$ROOT/scripts/postgres.sh" stop "$PGDIR" >/dev/null 2>&1 || true
        rm -rf "$PGDIR"
    fi
    exit "$rc"
}

free_port() {
    "$VENV/bin/python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

start_postgres() {
    if [[ -n ${MAILPOOL_TEST_POSTGRES_URL:-} ]]; then
        log "using PostgreSQL from MAILPOOL_TEST_POSTGRES_URL"
        return 0
    fi
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    trap 'exit 141' PIPE # e.g. `scripts/test.sh | head`
    # Under /tmp (short socket path, traversable by the postgres user).
    PGDIR=$(mktemp -d /tmp/mailpool-pg.XXXXXX)
    chmod 755 "$PGDIR"

    local port out rc
    for _ in 1 2 3; do
        port=$(free_port)
        rc=0
        out=$(bash "$ROOT/scripts/postgres.sh" start "$PGDIR" "$port" 2>&1) || rc=$?
        # 3 = port grabbed by someone else in the meantime: try another one.
        [[ $rc -eq 3 ]] || break
    done
    if [[ $rc -eq 0 ]]; then
        export MAILPOOL_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/mailpool_test"
        log "PostgreSQL test server on 127.0.0.1:$port"
        return 0
    fi
    printf '%s\n' "$out" >&2
    if is_ci; then
        log "error: could not start PostgreSQL (required when CI=true)"
        exit 1
    fi
    log "warning: could not start PostgreSQL; the PostgreSQL tests will be skipped"
}

# --- Django matrix: tests/contrib_django on every supported Django ------------
# .venv has the Django that pip picks for its interpreter (5.2 LTS on 3.11,
# 6.1 on 3.12+); the main pytest run covers that one. Each other version gets
# a virtualenv of its own, reused like .venv (re-installed only when
# pyproject.toml, the interpreter or the version changes), on an interpreter
# it supports. Its run puts the default database on PostgreSQL when there is
# one, so the admin, backend and endpoint tests see PostgreSQL too.
DJANGO_VERSIONS=("5.2" "6.1")

python_for_django() { # VERSION -> an interpreter that Django VERSION supports
    local minimum=3.10 candidate
    [[ $1 == 6.* ]] && minimum=3.12
    for candidate in python3 python3.13 python3.12 \
        "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$minimum'.split('.'))))" 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

setup_django_venv() { # VERSION PYTHON -> prints the venv's python
    local version=$1 python=$2 dir=$VENV/matrix/django-$1 stamp want
    if ! "$dir/bin/python" -c '' >/dev/null 2>&1; then
        log "creating virtualenv $dir (Django $version)"
        "$python" -m venv --clear "$dir" >&2
    fi
    stamp=$dir/.mailpool-dev.stamp
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$dir/bin/python" -VV) django~=$version.0"
    if [[ ! -f $stamp || $(<"$stamp") != "$want" ]]; then
        log "installing mailpool[dev] with Django $version into $dir..."
        "$dir/bin/python" -m pip install -qq --disable-pip-version-check \
            -e '.[dev]' "django~=$version.0" >&2
        printf '%s\n' "$want" >"$stamp"
    fi
    printf '%s\n' "$dir/bin/python"
}

django_matrix() {
    local main version python venv_python database=sqlite
    main=$("$VENV/bin/python" -c 'import django; print("%d.%d" % django.VERSION[:2])')
    [[ -n ${MAILPOOL_TEST_POSTGRES_URL:-} ]] && database=postgresql
    for version in "${DJANGO_VERSIONS[@]}"; do
        [[ $version == "$main" ]] && continue # the main pytest run covers it
        if ! python=$(python_for_django "$version"); then
            if is_ci; then
                log "error: no Python interpreter for Django $version (3.12+ for Django 6)"
                exit 1
            fi
            log "warning: no Python interpreter for Django $version; skipping it"
            continue
        fi
        if command -v flock >/dev/null 2>&1; then
            exec 8>>"/tmp/mailpool-venv-$(id -u)-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)-django-$version.lock"
            flock 8
        fi
        venv_python=$(setup_django_venv "$version" "$python")
        if command -v flock >/dev/null 2>&1; then exec 8>&-; fi
        header "pytest tests/contrib_django: Django $version on $("$venv_python" -V), default database $database"
        MAILPOOL_TEST_DJANGO_DB=$database "$venv_python" -m pytest -q tests/contrib_django
    done
}

setup_venv
export VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH
start_postgres

# --- 3. quality gates (set -e stops at the first failure) -------------------
header "ruff check ."
"$VENV/bin/ruff" check .
header "ruff format --check ."
"$VENV/bin/ruff" format --check .
header "mypy"
"$VENV/bin/mypy"
header "mypy on the docs' snippets and examples, with and without pydantic's plugin"
"$VENV/bin/python" tests/docsnippets.py typecheck
header "mkdocs build --strict (docs: broken links are errors)"
NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --quiet --site-dir "$(mktemp -d)"
header "python -m build, twine check --strict (the sdist and wheel a user installs)"
MAILPOOL_DIST=$(mktemp -d)
export MAILPOOL_DIST
build_log=$("$VENV/bin/python" -m build --outdir "$MAILPOOL_DIST" . 2>&1) ||
    { printf '%s\n' "$build_log" >&2; exit 1; }
"$VENV/bin/twine" check --strict "$MAILPOOL_DIST"/*
django_matrix
header "pytest${*:+ $*}"
"$VENV/bin/python" -m pytest "$@"
