"""Servers some suites test against, from Debian's packages: started on loopback for one
suite's runs, in a directory under target/compat/, and stopped after (bounded waits)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

APT_PACKAGES = {"redis": "redis-server", "postgres": "postgresql"}
SERVER_BINARIES = {"redis": "redis-server", "postgres": "/usr/lib/postgresql/*/bin/postgres"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def ensure_installed(name: str) -> None:
    """Install the Debian package when its server is missing (a clean CI machine)."""
    if glob.glob(SERVER_BINARIES[name]) or shutil.which(SERVER_BINARIES[name]):
        return
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", APT_PACKAGES[name]], check=True, env=env, timeout=600
    )


def _wait_port(port: int, proc: subprocess.Popen, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not listen on 127.0.0.1:{port} in {seconds:.0f}s")


@contextlib.contextmanager
def redis(workdir: Path) -> Iterator[list[str]]:
    """redis-server on 127.0.0.1, no persistence; yields the suite's pytest arguments."""
    ensure_installed("redis")
    workdir.mkdir(parents=True, exist_ok=True)
    # redis' default port when it is free: a few of redis-py's tests connect to it by name.
    port = 6379 if _port_free(6379) else _free_port()
    cmd = [
        shutil.which("redis-server") or "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--enable-debug-command",
        "yes",
    ]
    with open(workdir / "redis.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc)
        yield [f"--redis-url=redis://127.0.0.1:{port}/0"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def postgres(workdir: Path) -> Iterator[list[str]]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth, no fsync), run as the
    postgres user (initdb refuses root); PGHOST/PGPORT/PGUSER point the suite at it."""
    ensure_installed("postgres")
    bindir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
    tmp = Path(tempfile.mkdtemp(prefix="ferroloop-compat-pg-"))
    shutil.chown(tmp, "postgres")
    data, sockdir = tmp / "data", tmp
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [
            *as_pg,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = _free_port()
    cmd = [
        *as_pg,
        str(bindir / "postgres"),
        "-D",
        str(data),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        str(sockdir),
        "-c",
        "fsync=off",
        "-c",
        "max_connections=200",
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("PGHOST", "PGPORT", "PGUSER")}
    with open(workdir / "postgres.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, 60)
        os.environ.update(PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="postgres")
        yield []
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


SERVICES = {"redis": redis, "postgres": postgres}
