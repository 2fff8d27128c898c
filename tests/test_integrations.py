"""Servers and frameworks run on ferroloop the documented way (docs/integrations.md).

Each test starts its server on a loopback socket this process binds (handed to the child
by fd, so no port is guessed), makes one HTTP request and asks the application which loop
served it. ferroloop-only: each documents a way to select ferroloop. A package that is not
installed skips its test (requirements-dev.txt installs them all).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ferroloop_only, pytest.mark.timeout(60)]

# A minimal ASGI application: answers every request with the class of the loop serving it.
ASGI_APP = textwrap.dedent(
    """
    import asyncio

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        loop = type(asyncio.get_running_loop())
        body = f"{loop.__module__}.{loop.__qualname__}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    """
)

FERROLOOP_LOOP = "ferroloop.Loop"


@pytest.fixture(autouse=True)
def _ferroloop(ferroloop_module):
    return ferroloop_module


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    return tmp_path


@pytest.fixture
def listener():
    sock = socket.create_server(("127.0.0.1", 0))
    sock.set_inheritable(True)
    yield sock
    sock.close()


def get(sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    # The socket listens already: the request waits in its backlog until the server is up.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20) as response:
        assert response.status == 200
        return response.read().decode()


def serve(args, sock, cwd, *, stop=signal.SIGINT):
    """Start a server child on ``sock``, make one request, stop it: (answer, exit code, log)."""
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        pass_fds=[sock.fileno()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        answer = get(sock)
        proc.send_signal(stop)
        log, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return answer, proc.returncode, log


def test_uvicorn_loop_option(app_dir, listener):
    pytest.importorskip("uvicorn")
    args = [sys.executable, "-m", "uvicorn", "--fd", str(listener.fileno())]
    args += ["--loop", "ferroloop:new_event_loop", "asgi_app:app"]
    answer, code, log = serve(args, listener, app_dir)
    assert answer == FERROLOOP_LOOP, log
    assert code == 0, log


def test_uvicorn_bare_loop_name_is_refused(app_dir):
    pytest.importorskip("uvicorn")
    # uvicorn takes "module:attribute" for a loop of its own choosing; "ferroloop" alone
    # is refused before anything is served.
    proc = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--loop", "ferroloop", "--port", "0", "asgi_app:app"],
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0
    assert "ferroloop" in proc.stderr and "<module>:<attribute>" in proc.stderr, proc.stderr


def test_gunicorn_uvicorn_worker(app_dir, listener):
    pytest.importorskip("gunicorn")
    pytest.importorskip("uvicorn")
    args = [sys.executable, "-m", "gunicorn", "--bind", f"fd://{listener.fileno()}"]
    args += ["--workers", "1", "--graceful-timeout", "5"]
    args += ["--worker-class", "ferroloop.gunicorn.UvicornWorker", "asgi_app:app"]
    answer, code, log = serve(args, listener, app_dir, stop=signal.SIGTERM)
    assert answer == FERROLOOP_LOOP, log
    assert code == 0, log


def test_hypercorn_under_python_m_ferroloop(app_dir, listener):
    pytest.importorskip("hypercorn")
    # hypercorn's asyncio worker makes its loop with asyncio.Runner(): the loop asyncio
    # makes, which `python -m ferroloop` has made a ferroloop. --workers 0 serves in this
    # process; hypercorn starts its workers with multiprocessing's "spawn", fresh
    # interpreters that `python -m ferroloop` does not reach.
    args = [sys.executable, "-m", "ferroloop", "-m", "hypercorn", "--workers", "0"]
    args += ["--bind", f"fd://{listener.fileno()}", "asgi_app:app"]
    answer, code, log = serve(args, listener, app_dir)
    assert answer == FERROLOOP_LOOP, log
    assert code == 0, log


def test_hypercorn_serve_under_ferroloop_run(ferroloop_module, listener):
    pytest.importorskip("hypercorn")
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    namespace: dict = {}
    exec(ASGI_APP, namespace)
    config = Config()
    config.bind = [f"fd://{listener.fileno()}"]
    config.accesslog = config.errorlog = None

    async def main():
        stop = asyncio.Event()
        server = asyncio.ensure_future(
            hypercorn_serve(namespace["app"], config, shutdown_trigger=stop.wait)
        )
        answer = await asyncio.to_thread(get, listener)
        stop.set()
        await asyncio.wait_for(server, 20)
        return answer

    # hypercorn closes the socket it serves: give it a duplicate.
    config.bind = [f"fd://{os.dup(listener.fileno())}"]
    assert ferroloop_module.run(main()) == FERROLOOP_LOOP


AIOHTTP_APP = textwrap.dedent(
    """
    import asyncio, socket, sys
    import ferroloop
    from aiohttp import web

    async def handle(request):
        loop = type(asyncio.get_running_loop())
        return web.Response(text=f"{loop.__module__}.{loop.__qualname__}")

    app = web.Application()
    app.router.add_get("/", handle)
    sock = socket.socket(fileno=int(sys.argv[1]))
    web.run_app(app, sock=sock, loop=ferroloop.new_event_loop(), print=None)
    """
)


def test_aiohttp_run_app(tmp_path, listener):
    pytest.importorskip("aiohttp")
    (tmp_path / "aiohttp_app.py").write_text(AIOHTTP_APP)
    args = [sys.executable, "aiohttp_app.py", str(listener.fileno())]
    answer, code, log = serve(args, listener, tmp_path)
    assert answer == FERROLOOP_LOOP, log
    assert code == 0, log


def test_anyio_backend_options(ferroloop_module):
    anyio = pytest.importorskip("anyio")

    async def echo(stream):
        async with stream:
            await stream.send(await stream.receive())

    async def main():
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, echo)
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                await client.send(b"ping")
                reply = await client.receive()
            tg.cancel_scope.cancel()
        return type(asyncio.get_running_loop()), reply

    options = {"loop_factory": ferroloop_module.new_event_loop}
    loop_class, reply = anyio.run(main, backend="asyncio", backend_options=options)
    assert loop_class is ferroloop_module.Loop and reply == b"ping"


PYTEST_ASYNCIO_TESTS = textwrap.dedent(
    """
    import asyncio
    import pytest
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def fixture_loop():
        return asyncio.get_running_loop()

    @pytest.mark.asyncio
    async def test_loop(fixture_loop):
        loop = asyncio.get_running_loop()
        assert fixture_loop is loop
        print("LOOP", type(loop).__module__, type(loop).__qualname__)
    """
)


def _pytest(tmp_path, *options):
    (tmp_path / "test_on_loop.py").write_text(PYTEST_ASYNCIO_TESTS)
    ini = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    (tmp_path / "pytest.ini").write_text(ini)
    # Only pytest-asyncio and the plugin under test: no other installed plugin takes part.
    args = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "pytest_asyncio.plugin", *options]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        args,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if line.startswith("LOOP")]


def test_pytest_asyncio_plugin(tmp_path):
    pytest_asyncio = pytest.importorskip("pytest_asyncio")
    version = tuple(int(part) for part in pytest_asyncio.__version__.split(".")[:2])
    if version < (1, 4):
        pytest.skip("pytest_asyncio_loop_factories is new in pytest-asyncio 1.4")
    assert _pytest(tmp_path, "-p", "ferroloop.pytest_plugin") == ["LOOP ferroloop Loop"]
    # Without it, pytest-asyncio's own loop: the plugin is not registered on its own.
    assert _pytest(tmp_path) == ["LOOP asyncio.unix_events _UnixSelectorEventLoop"]
