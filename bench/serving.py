"""Process plumbing for the echo and http benchmarks: a server, the load generator, strace.

Each measurement starts `bench/servers/echo.py` (`bench/servers/web.py` for the http
suite's stacks) in a fresh interpreter, waits for its
`READY <address> pid=<pid>` line, runs the Rust load generator against it, then stops it with
SIGTERM. A server that reports `NOTIMPL` (its loop lacks a method the style needs) makes the
measurement "n/a" with that reason rather than a failure. With `TlsFiles` both sides speak
TLS: the server with a certificate and key, the load generator trusting only their CA.
The pseudo-loop `limit` runs the plain-Rust echo server (bench/limit) instead of Python.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "servers", "echo.py")
# The http suite's server stacks, served by bench/servers/web.py over TCP.
WEB_SERVER = os.path.join(HERE, "servers", "web.py")
HTTP_KINDS = ("httptools", "aiohttp", "uvicorn")
READY_TIMEOUT = 30  # seconds for an interpreter to import its loop and listen
STOP_TIMEOUT = 10
LIMIT = "limit"  # the plain-Rust echo server (bench/limit), measured as if it were a loop
LOADGEN_SLACK = 30  # seconds a load generator may take beyond its warm-up and duration
# Under strace the server runs many times slower, so back-to-back requests would already be
# queued whenever it looks, and it would skip the wait (and syscalls) it makes at full
# speed. A pause between exchanges lets it go idle before each request, as it does then.
SYSCALL_PAUSE = 0.001
# glibc's malloc moves two thresholds as a process runs: freeing a block it had mmapped raises
# the mmap threshold to that block's size and the trim threshold to twice it. A new server that
# never freed such a block hands the top of its heap back to the kernel whenever 128 KiB there
# are free, then faults it in again with the next batch of messages; one that did keeps it.
# Which state a server process lands in is chance, and it moves some rows twofold on every loop
# alike, so by default each server runs with both fixed where a process that once freed a
# 4 MiB block has them. MALLOC "glibc" leaves glibc's own start-up values (bench/README.md).
MALLOC = ("fixed", "glibc")
FIXED_MALLOC = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=8388608"


def server_env(malloc):
    """The environment of a server process under `malloc` (one of MALLOC)."""
    if malloc not in MALLOC:
        raise ValueError(f"malloc must be one of {MALLOC}, not {malloc!r}")
    env = dict(os.environ)
    if malloc == "fixed":
        env["GLIBC_TUNABLES"] = ":".join(filter(None, (env.get("GLIBC_TUNABLES"), FIXED_MALLOC)))
    return env


class TlsFiles(NamedTuple):
    """PEM files of a TLS measurement: the CA the client trusts, the server's certificate
    chain and key, and the name the certificate is for."""

    ca: str
    cert: str
    key: str
    name: str = "localhost"


def make_tls_files(workdir):
    """A throwaway CA and a server certificate for localhost, 127.0.0.1 and ::1 (trustme's
    defaults: ECDSA P-256 keys), written into `workdir`."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
    files = TlsFiles(*(os.path.join(workdir, f) for f in ("ca.pem", "cert.pem", "key.pem")))
    ca.cert_pem.write_to_path(files.ca)
    with open(files.cert, "wb") as f:
        for pem in cert.cert_chain_pems:
            f.write(pem.bytes())
    cert.private_key_pem.write_to_path(files.key)
    return files


def release_binary(name):
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(os.path.dirname(HERE), "target")
    return os.path.join(target, "release", name)


def default_loadgen():
    return release_binary("loadgen")


def default_limit():
    return release_binary("echo-limit")


class Server:
    """One echo server process; `address` and `pid` are None if it never became ready.
    `loop` LIMIT runs the `limit` binary (bench/limit), which has no styles and no TLS;
    `malloc`: one of MALLOC."""

    def __init__(
        self,
        loop,
        kind,
        transport,
        cpu,
        workdir,
        prefix=(),
        tls=None,
        limit=None,
        size=None,
        malloc="fixed",
    ):
        if transport == "tcp":
            where = ["--tcp", "127.0.0.1:0"]
        else:
            where = ["--unix", os.path.join(workdir, f"{loop}-{kind}.sock")]
        pin = ["--cpu", str(cpu)] if cpu is not None else []
        if loop == LIMIT:
            cmd = [*prefix, limit or default_limit(), *where, *pin]
        elif kind in HTTP_KINDS:  # `size`: the response body
            cmd = [*prefix, sys.executable, WEB_SERVER, "--loop", loop, "--kind", kind]
            cmd += [*where, "--size", str(size), *pin]
        else:
            cmd = [*prefix, sys.executable, SERVER, "--loop", loop, "--kind", kind, *where, *pin]
        if tls:
            cmd += ["--tls-cert", tls.cert, "--tls-key", tls.key]
        self.stderr = tempfile.TemporaryFile()  # a file, not a pipe: it never blocks the server
        env = server_env(malloc)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        self.address = self.pid = None
        line = self._first_line(READY_TIMEOUT)
        if line.startswith("READY "):
            _, self.address, pid = line.split()
            self.pid = int(pid.removeprefix("pid="))

    def _first_line(self, timeout):
        deadline, buf = time.monotonic() + timeout, b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return ""
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:  # exited before listening
                return ""
            buf += chunk
        return buf.split(b"\n", 1)[0].decode(errors="replace")

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM (to the interpreter, not a wrapper such as strace), then wait up to
        `timeout` seconds; returns (exit code, NOTIMPL message or None, last line of stderr)."""
        try:
            os.kill(self.pid or self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc.stdout.close()
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        self.stderr.close()
        notimpl = next((ln[8:] for ln in lines if ln.startswith("NOTIMPL ")), None)
        return code, notimpl, (lines[-1] if lines else "")


def run_loadgen(loadgen, address, args, cpu, budget):
    """Returns (parsed JSON or None, error message or None)."""
    cmd = [loadgen, "--target", address, *map(str, args)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget + LOADGEN_SLACK)
    except subprocess.TimeoutExpired:
        return None, "load generator timed out"
    result = None
    if proc.stdout.strip():
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    if proc.returncode:
        why = result and result.get("error_messages")
        return result, "; ".join(why) if why else proc.stderr.strip() or f"exit {proc.returncode}"
    return result, None


def measure(
    loadgen,
    loop,
    kind,
    transport,
    size,
    conns,
    timing,
    cpus,
    workdir,
    tls=None,
    reconnect=False,
    limit=None,
    malloc="fixed",
):
    """One throughput measurement: {"status": "ok", "result": loadgen JSON} or
    {"status": "n/a" | "failed", "reason": ...}. `tls`: TlsFiles to speak TLS with;
    `reconnect`: a new connection for every exchange (connections or handshakes per second);
    `limit`: the limit server's binary, if not the default; `malloc`: one of MALLOC."""
    warmup, duration = timing
    server_cpu, client_cpu = cpus
    srv = Server(
        loop, kind, transport, server_cpu, workdir, tls=tls, limit=limit, size=size, malloc=malloc
    )
    result = err = None
    try:
        if srv.address:
            args = ["--connections", conns, "--size", size, "--warmup", warmup]
            if kind in HTTP_KINDS:
                args += ["--mode", "http"]
            args += ["--duration", duration, "--server-pid", srv.pid]
            if tls:
                args += ["--tls", "--tls-ca", tls.ca, "--tls-name", tls.name]
            if reconnect:
                args += ["--reconnect"]
            result, err = run_loadgen(loadgen, srv.address, args, client_cpu, warmup + duration)
    finally:
        code, notimpl, tail = srv.stop()
    if notimpl:
        return {"status": "n/a", "reason": notimpl}
    if not srv.address:
        return {"status": "failed", "reason": f"server did not start: {tail or f'exit {code}'}"}
    if err:
        server = f"exit {code}" + (f", {tail}" if tail else "")  # 0 after SIGTERM: it lived
        return {"status": "failed", "reason": f"{err} (server: {server})"}
    if code:
        result["server_exit"] = code  # served fine, stopped badly: kept, and noted
    return {"status": "ok", "result": result}


def have_strace():
    return shutil.which("strace") is not None


def count_syscalls(
    loadgen, loop, kind, transport, requests, cpus, workdir, limit=None, malloc="fixed"
):
    """Runs the server under `strace -f -c` for exactly `requests` exchanges (1 KiB, one
    connection, SYSCALL_PAUSE apart); returns ({syscall: calls}, None) or (None, reason).
    The counts include start-up and shutdown: the caller subtracts a run with fewer requests."""
    out = os.path.join(workdir, f"strace-{loop}-{kind}-{transport}-{requests}.txt")
    server_cpu, client_cpu = cpus
    strace = ("strace", "-f", "-c", "-o", out)
    srv = Server(
        loop, kind, transport, server_cpu, workdir, prefix=strace, limit=limit, malloc=malloc
    )
    err = None
    try:
        if srv.address:
            args = ["--connections", 1, "--size", 1024, "--requests", requests]
            args += ["--pause-us", int(SYSCALL_PAUSE * 1e6)]
            _, err = run_loadgen(loadgen, srv.address, args, client_cpu, requests * SYSCALL_PAUSE)
    finally:
        code, notimpl, tail = srv.stop()
    if notimpl:
        return None, f"n/a: {notimpl}"
    if not srv.address:
        return None, f"server did not start under strace: {tail or f'exit {code}'}"
    if err:
        return None, err
    with open(out) as f:
        return parse_strace(f.read()), None


def parse_strace(text):
    """{syscall: calls} from `strace -c` output (columns: % time, seconds, usecs/call, calls,
    errors, syscall; the errors column may be blank)."""
    counts = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            counts[fields[-1]] = counts.get(fields[-1], 0) + int(fields[3])
    return counts
