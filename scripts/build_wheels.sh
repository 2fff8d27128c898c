#!/usr/bin/env bash
# `make wheels` / `make wheels-aarch64`: an sdist, then from it a manylinux2014
# (glibc 2.17 or later) wheel per CPython 3.10-3.13 installed, all in dist/.
#
#   scripts/build_wheels.sh [x86_64|aarch64]
#
# The wheels are built from the unpacked sdist, so a broken sdist fails here.
# maturin links through zig against glibc 2.17's symbols; `auditwheel show` must
# then agree each wheel is manylinux_2_17. An x86_64 wheel is also installed
# into a fresh venv of its own interpreter, which must import it and run a loop.
# aarch64 wheels are cross-built, for each version's standard build configuration,
# and only checked by auditwheel (nothing here runs aarch64 code).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
arch=${1:-x86_64}
case "$arch" in
    x86_64 | aarch64) ;;
    *) echo "usage: $0 [x86_64|aarch64]" >&2; exit 2 ;;
esac
# maturin runs zig as `python -m ziglang` with the python found on PATH.
export PATH="$root/.venv/bin:$PATH"
out="$root/dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
interpreters=()
missing=()
for v in 3.10 3.11 3.12 3.13; do
    if [ "$arch" = aarch64 ]; then
        interpreters+=("python$v")
        continue
    fi
    py=$(ls -d "$pyenv_root"/versions/"$v".*/bin/python 2>/dev/null | sort -V | tail -1 || true)
    [ -n "$py" ] || py=$(command -v "python$v" 2>/dev/null || true)
    if [ -n "$py" ] && "$py" -c 'import venv' >/dev/null 2>&1; then
        interpreters+=("$py")
    else
        missing+=("$v")
    fi
done
[ ${#interpreters[@]} -gt 0 ] || { echo "no CPython 3.10-3.13 found" >&2; exit 1; }

mkdir -p "$out"
rm -f "$out"/ferroloop-*"$arch".whl
# `make wheels` makes the sdist afresh; the aarch64 wheels use the one beside them.
if [ "$arch" = x86_64 ]; then
    rm -f "$out"/ferroloop-*.tar.gz
fi
if ! ls "$out"/ferroloop-*.tar.gz >/dev/null 2>&1; then
    maturin sdist -o "$out"
fi
sdist=$(ls "$out"/ferroloop-*.tar.gz | tail -1)
tar xzf "$sdist" -C "$work"
src=$(ls -d "$work"/ferroloop-*/)

iflags=()
for py in "${interpreters[@]}"; do iflags+=(-i "$py"); done
# Its own target directory: the compiled dependencies are kept between runs, and
# the development build's are left alone.
(cd "$src" && CARGO_TARGET_DIR="$root/target/wheels" maturin build --release --zig \
    --compatibility manylinux2014 --target "$arch-unknown-linux-gnu" "${iflags[@]}" -o "$out")

failed=0
for whl in "$out"/ferroloop-*"$arch".whl; do
    name=$(basename "$whl")
    if ! auditwheel show "$whl" | tr -d '\n' | grep -q "\"manylinux_2_17_$arch\""; then
        echo "FAIL $name: auditwheel does not find it manylinux_2_17_$arch" >&2
        auditwheel show "$whl" >&2 || true
        failed=1
        continue
    fi
    for f in ferroloop/py.typed ferroloop/_ferroloop.pyi; do
        if ! python -c 'import sys, zipfile; sys.exit(sys.argv[2] not in zipfile.ZipFile(sys.argv[1]).namelist())' "$whl" "$f"; then
            echo "FAIL $name: $f missing" >&2
            failed=1
        fi
    done
    echo "ok   $name: manylinux_2_17_$arch, $(( $(stat -c %s "$whl") / 1024 )) KiB"
done

if [ "$arch" = x86_64 ]; then
    # Each wheel on its own interpreter, from a directory with no source in it,
    # in isolated mode (-I): the installed wheel is all it can import.
    for py in "${interpreters[@]}"; do
        tag=$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
        whl=$(ls "$out"/ferroloop-*-"$tag"-"$tag"-*x86_64.whl)
        venv="$work/venv-$tag"
        "$py" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --no-index --no-deps "$whl"
        if (cd "$work" && "$venv/bin/python" -I -W error -c '
import asyncio, ferroloop, sys
async def main():
    await asyncio.sleep(0.001)
    return type(asyncio.get_running_loop()).__name__
assert ferroloop.run(main()) == "Loop"
assert ferroloop.__file__.startswith(sys.prefix), ferroloop.__file__
print("ok   %s imports and runs on Python %s" % (ferroloop.__version__, sys.version.split()[0]))
'); then :; else
            echo "FAIL $(basename "$whl") on $py" >&2
            failed=1
        fi
    done
fi
[ ${#missing[@]} -eq 0 ] || echo "CPython not installed, no wheel: ${missing[*]}"
exit $failed
