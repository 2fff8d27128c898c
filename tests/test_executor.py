"""run_in_executor, default executors, DNS helpers and asyncio.to_thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import socket
import sys
import threading

import pytest

var: contextvars.ContextVar[str] = contextvars.ContextVar("executor_var", default="unset")


def _thread_info(x):
    return x * 2, threading.current_thread()


def test_run_in_executor_default(loop, run):
    async def main():
        return await loop.run_in_executor(None, _thread_info, 21)

    result, thread = run(main())
    assert result == 42
    assert thread is not threading.current_thread()


def test_run_in_executor_propagates_exception(loop, run):
    def fail():
        raise ValueError("in worker")

    async def main():
        await loop.run_in_executor(None, fail)

    with pytest.raises(ValueError, match="^in worker$"):
        run(main())


def test_run_in_executor_custom_executor(loop, run):
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom-pool") as pool:

        async def main():
            fut = loop.run_in_executor(pool, _thread_info, 1)
            assert isinstance(fut, asyncio.Future)
            return await fut

        result, thread = run(main())
    assert result == 2
    assert thread.name.startswith("custom-pool")


def test_set_default_executor(loop, run):
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="new-default")
    loop.set_default_executor(pool)

    async def main():
        result = await loop.run_in_executor(None, _thread_info, 5)
        await loop.shutdown_default_executor()
        return result

    result, thread = run(main())
    assert result == 10
    assert thread.name.startswith("new-default")


class _InlineExecutor(concurrent.futures.Executor):
    """A non-ThreadPoolExecutor that runs jobs inline."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        self.submitted += 1
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


def test_set_default_executor_non_thread_pool(loop, run):
    executor = _InlineExecutor()
    if sys.version_info >= (3, 11):
        with pytest.raises(TypeError, match="^executor must be ThreadPoolExecutor instance$"):
            loop.set_default_executor(executor)
        return
    # 3.10 still accepts it, with a DeprecationWarning, and then uses it.
    with pytest.warns(DeprecationWarning, match="not an instance of ThreadPoolExecutor"):
        loop.set_default_executor(executor)

    async def main():
        return await loop.run_in_executor(None, _thread_info, 3)

    assert run(main())[0] == 6
    assert executor.submitted == 1


def test_shutdown_default_executor(loop, run):
    async def main():
        _, worker = await loop.run_in_executor(None, _thread_info, 0)
        await loop.shutdown_default_executor()
        return worker

    worker = run(main())
    assert not worker.is_alive()
    with pytest.raises(RuntimeError, match="^Executor shutdown has been called$"):
        loop.run_in_executor(None, _thread_info, 0)


def test_shutdown_default_executor_without_executor(loop, run):
    run(loop.shutdown_default_executor())  # nothing was ever started: a no-op


def test_run_in_executor_on_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.run_in_executor(None, print)


def test_getaddrinfo_loopback(loop, run):
    async def main():
        return await loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)

    result = run(main())
    assert result == socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
    family, type_, proto, canonname, sockaddr = result[0]
    # The enum types, not bare ints, as socket.getaddrinfo returns them.
    assert family is socket.AF_INET
    assert type_ is socket.SOCK_STREAM
    assert sockaddr == ("127.0.0.1", 80)


def test_getaddrinfo_error_is_gaierror(loop, run):
    async def main():
        return await loop.getaddrinfo("not-a-number", 80, flags=socket.AI_NUMERICHOST)

    with pytest.raises(socket.gaierror) as info:
        socket.getaddrinfo("not-a-number", 80, flags=socket.AI_NUMERICHOST)
    expected = info.value
    with pytest.raises(socket.gaierror) as info:
        run(main())
    assert info.value.errno == expected.errno == socket.EAI_NONAME
    assert str(info.value) == str(expected)


def test_getnameinfo_loopback(loop, run):
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV

    async def main():
        return await loop.getnameinfo(("127.0.0.1", 8080), flags)

    assert run(main()) == ("127.0.0.1", "8080")
    assert run(loop.getnameinfo(("127.0.0.1", 80))) == socket.getnameinfo(("127.0.0.1", 80), 0)


def test_to_thread(loop, run):
    def work(x):
        return x + 1, var.get(), threading.current_thread()

    async def main():
        var.set("copied into the thread")
        return await asyncio.to_thread(work, 1)

    value, seen, thread = run(main())
    assert value == 2
    assert seen == "copied into the thread"
    assert thread is not threading.current_thread()
