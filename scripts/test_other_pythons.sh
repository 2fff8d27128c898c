#!/usr/bin/env bash
# Build ferroloop for every other CPython (3.10-3.13) installed here and run the
# pytest suite and that version's conformance gate on it. The main interpreter's
# run is `make test`'s own; an interpreter that is not installed is reported, not
# silently passed.
set -euo pipefail
cd "$(dirname "$0")/.."
main_version=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
tested=()
missing=()
for v in 3.10 3.11 3.12 3.13; do
    [ "$v" = "$main_version" ] && continue
    # pyenv's own install first (its shims may exist without being active),
    # then whatever python3.X is on PATH; either must actually run.
    py=$(ls -d "$pyenv_root"/versions/"$v".*/bin/python 2>/dev/null | sort -V | tail -1 || true)
    [ -n "$py" ] || py=$(command -v "python$v" 2>/dev/null || true)
    if [ -z "$py" ] || ! "$py" -c 'import test.test_asyncio' >/dev/null 2>&1; then
        missing+=("$v")
        continue
    fi
    venv=".venv-$v"
    echo "== Python $v ($py)"
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q maturin pytest pytest-timeout trustme hypothesis nest_asyncio \
        uvloop "uvicorn>=0.36" "uvicorn-worker>=0.4" "gunicorn>=23" "hypercorn>=0.17" "aiohttp>=3.10" \
        "anyio>=4.16,<5" "pytest-asyncio>=1.5,<2"
    VIRTUAL_ENV="$PWD/$venv" PYO3_PYTHON="$PWD/$venv/bin/python" "$venv/bin/maturin" develop -q --release
    FERROLOOP_REQUIRED=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider tests
    "$venv/bin/python" tests/cpython/conformance.py --check
    tested+=("$v")
done
echo "other Pythons tested: ${tested[*]:-none}; not installed: ${missing[*]:-none}"
