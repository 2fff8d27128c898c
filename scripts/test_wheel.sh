#!/usr/bin/env bash
# `make test-wheel`: ferroloop as a user gets it. A release wheel for .venv's
# Python goes into a fresh venv; then, with no cargo, rustc or rustup on PATH and
# from a directory outside the checkout (so the source tree's python/ cannot be
# imported), the examples run and a smoke subset of the tests passes on it.
#
#   scripts/test_wheel.sh [WHEEL]   # default: build one with `maturin build --release`
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# Behaviour tests that need nothing beyond pytest: callbacks, timers, the lifecycle,
# streams (over the native TCP and Unix transports), subprocesses (pidfd) and signals,
# plus the examples compared with asyncio's output. The whole suite runs on the
# development build; this is what tells a wheel that works from one that does not.
SMOKE_TESTS="test_examples.py test_callbacks.py test_timers.py test_lifecycle.py
test_streams.py test_subprocess.py test_signals.py"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ $# -ge 1 ]; then
    wheel=$1
else
    # After `make build-prod` this reuses its compiled crate: only the packaging runs.
    "$root/.venv/bin/maturin" build -q --release -i "$root/.venv/bin/python" -o "$work/dist"
    wheel=$(ls "$work"/dist/ferroloop-*.whl)
fi
echo "wheel: $(basename "$wheel") ($(( $(stat -c %s "$wheel") / 1024 )) KiB)"

# PATH without any directory that holds a Rust toolchain.
clean_path=
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
    if [ -e "$d/cargo" ] || [ -e "$d/rustc" ] || [ -e "$d/rustup" ]; then
        continue
    fi
    clean_path=${clean_path:+$clean_path:}$d
done
no_rust=(env -u CARGO_HOME -u RUSTUP_HOME -u RUSTUP_TOOLCHAIN -u PYO3_PYTHON -u VIRTUAL_ENV
    -u PYTHONPATH -u PYTHONHOME "PATH=$clean_path")
if "${no_rust[@]}" sh -c 'command -v cargo || command -v rustc' >/dev/null; then
    echo "a Rust toolchain is still on PATH" >&2
    exit 1
fi

base_python=$("$root/.venv/bin/python" -c 'import sys; print(sys._base_executable)')
"$base_python" -m venv "$work/venv"
venv_py="$work/venv/bin/python"
"${no_rust[@]}" "$venv_py" -m pip install -q --no-index --no-deps "$wheel"
"${no_rust[@]}" "$venv_py" -m pip install -q pytest pytest-timeout

# The examples and the chosen tests, copied outside the checkout.
mkdir -p "$work/run/tests"
cp -r "$root/examples" "$work/run/"
cp -r "$root/tests/conftest.py" "$root/tests/support" "$work/run/tests/"
for t in $SMOKE_TESTS; do cp "$root/tests/$t" "$work/run/tests/"; done

cd "$work/run"
"${no_rust[@]}" "$venv_py" -I -c '
import ferroloop, pathlib, sys
where = pathlib.Path(ferroloop.__file__).resolve()
assert where.is_relative_to(pathlib.Path(sys.prefix).resolve()), where
for name in ("py.typed", "_ferroloop.pyi"):
    assert (where.parent / name).is_file(), name
print(f"ferroloop {ferroloop.__version__} from {where.parent}")
'
"${no_rust[@]}" "$venv_py" examples/run_all.py
# shellcheck disable=SC2086  # the list is meant to split
(cd tests && "${no_rust[@]}" FERROLOOP_REQUIRED=1 "$venv_py" -m pytest -q -p no:cacheprovider \
    -o timeout=120 $SMOKE_TESTS)
