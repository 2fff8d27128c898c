#!/usr/bin/env python3
"""Check that each workspace package's `rust-version` is what its dependencies need.

For every workspace member that declares a `rust-version`, the oldest Rust able to
build it is the newest `rust-version` declared anywhere in what it pulls in: its
normal and build dependencies, transitively, plus its own dev-dependencies (its
tests build them). The member must declare at least that, or a user's older toolchain fails inside a
dependency instead of at cargo's clear "requires rustc X" message. It may declare
more when its own code needs more; its own code using a std API newer than the
declared version is clippy's `incompatible_msrv` lint, which `make lint` runs with
warnings as errors.

Reads `cargo metadata --locked`, so it checks the versions in Cargo.lock. Exits 1
and names each one too low; `--show` prints the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys


def version_key(text: str) -> tuple[int, ...]:
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def normalise(text: str) -> str:
    # "1.85" and "1.85.0" are the same requirement.
    parts = list(version_key(text))
    while len(parts) > 2 and parts[-1] == 0:
        parts.pop()
    return ".".join(str(p) for p in parts)


def main() -> int:
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    packages = {p["id"]: p for p in meta["packages"]}
    edges: dict[str, list[tuple[str, bool]]] = {}
    for node in meta["resolve"]["nodes"]:
        edges[node["id"]] = [
            (dep["pkg"], all(k["kind"] == "dev" for k in dep["dep_kinds"])) for dep in node["deps"]
        ]

    failures = []
    for member in meta["workspace_members"]:
        declared = packages[member].get("rust_version")
        if declared is None:
            continue
        # The member's own dev-dependencies count; theirs do not.
        seen: set[str] = set()
        todo = [dep for dep, _dev in edges[member]]
        while todo:
            pkg = todo.pop()
            if pkg in seen:
                continue
            seen.add(pkg)
            todo.extend(dep for dep, dev in edges[pkg] if not dev)
        needed = [
            (packages[p]["rust_version"], packages[p]["name"])
            for p in seen
            if packages[p].get("rust_version")
        ]
        if not needed:
            continue
        top = max(version_key(v) for v, _ in needed)
        want = normalise(".".join(str(x) for x in top))
        by = sorted({name for v, name in needed if version_key(v) == top})
        name = packages[member]["name"]
        if "--show" in sys.argv:
            print(f"{name}: rust-version {declared}, dependencies need {want} ({', '.join(by)})")
        if version_key(declared) < top:
            failures.append(
                f"{name}: Cargo.toml says rust-version = {declared!r}, its dependencies "
                f'need {want} ({", ".join(by)}): set rust-version = "{want}"'
            )
    for line in failures:
        print(line, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
