#!/usr/bin/env bash
# `make valgrind`: a subset of the pytest suite (ferroloop's runs only) under valgrind's
# memcheck, on a build with debug info in its own venv (.venv-valgrind). Fails on any
# memcheck error and on any definite leak not suppressed.
#
# Suppressions: CPython's own (Misc/valgrind-python.supp, which Debian's python3 package
# installs as /usr/lib/valgrind/python3.supp; used when present, never copied here) and
# tests/sanitizers/valgrind.supp. PYTHONMALLOC=malloc: pymalloc's arenas would hide
# Python objects from memcheck and trip its uninitialised-read checks.
#
# VALGRIND_TESTS="tests/test_x.py ..." picks other files; the logs are kept in
# target/valgrind/logs.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-valgrind
logs=target/valgrind/logs
tests=${VALGRIND_TESTS:-tests/test_callbacks.py tests/test_timers.py tests/test_handle_reuse.py tests/test_gc_shelter.py \
tests/test_exceptions.py tests/test_sock_ops.py tests/test_udp.py tests/test_readers.py}
# Python 3.12 when installed: pyenv's 3.11 (built with -O3) reads an uninitialised digit
# in int.from_bytes (importlib calls it for every .pyc), and memcheck then flags each use
# of the result, hundreds of reports from a bare `python -c pass`; 3.12's ints are laid out
# anew and it runs clean. VALGRIND_PYTHON picks another.
pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
python=${VALGRIND_PYTHON:-$(ls -d "$pyenv_root"/versions/3.12.*/bin/python 2>/dev/null | sort -V | tail -1 || true)}
[ -n "$python" ] || python=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')

# shellcheck source=scripts/dev_venv.sh
source scripts/dev_venv.sh
dev_venv "$venv" "$python"

# The profiling profile (release with debug info) without LTO: a shorter build.
rm -rf target/valgrind/wheels
CARGO_PROFILE_PROFILING_LTO=false \
    CARGO_PROFILE_PROFILING_CODEGEN_UNITS=16 \
    PYO3_PYTHON="$PWD/$venv/bin/python" \
    .venv/bin/maturin build -q --profile profiling -i "$venv/bin/python" -o target/valgrind/wheels
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps target/valgrind/wheels/ferroloop-*.whl

supps=(--suppressions="$PWD/tests/sanitizers/valgrind.supp")
[ -e /usr/lib/valgrind/python3.supp ] && supps+=(--suppressions=/usr/lib/valgrind/python3.supp)

# Timing tests, which memcheck (tens of times slower) cannot meet:
deselect=(
    --deselect "tests/test_timers.py::test_sub_millisecond_sleep_precision"
    --deselect "tests/test_sock_ops.py::test_sock_sendall_large_payload_blocks_until_peer_reads"
)

rm -rf "$logs" && mkdir -p "$logs"
status=0
PYTHONMALLOC=malloc FERROLOOP_REQUIRED=1 \
    valgrind --tool=memcheck "${supps[@]}" --num-callers=40 \
    --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
    --error-exitcode=99 --log-file="$PWD/$logs/memcheck.%p.log" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider --loop=ferroloop "${deselect[@]}" $tests || status=$?

echo "valgrind: pytest exit $status; logs in $logs"
grep -h "ERROR SUMMARY" "$logs"/memcheck.*.log
exit "$status"
