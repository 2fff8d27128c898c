"""Bad arguments to every public loop and transport method (issue 17, section 2).

Whatever the arguments, ferroloop answers with a normal result or an
``Exception`` (never ``PanicException``, never a ``SystemError`` from an
abort), and the loop still runs a callback afterwards. Where asyncio answers
the same call, the exception type is compared with asyncio's (a fresh
``SelectorEventLoop`` per example), except for the differences listed in
``KNOWN``.

Bounded for ``make test`` (the "ci" profile: few examples, derandomized, no
example database, no deadline); ``make fuzz`` runs the "long" profile.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

# Hypothesis caches what it learns (constants, Unicode tables) in ./.hypothesis even without
# an example database: a directory removed at exit keeps runs from writing into the tree.
_HOME = tempfile.TemporaryDirectory(prefix="ferroloop-hypothesis-")
set_hypothesis_home_dir(_HOME.name)

settings.register_profile(
    "ci",
    max_examples=12,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=600,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

pytestmark = [pytest.mark.ferroloop_only, pytest.mark.timeout(600)]


# --- bad values


class _Raises:
    """An object whose every protocol method raises."""

    def fileno(self) -> int:
        raise RuntimeError("fileno raised")

    def __index__(self) -> int:
        raise RuntimeError("__index__ raised")

    def __len__(self) -> int:
        raise RuntimeError("__len__ raised")

    def __float__(self) -> float:
        raise RuntimeError("__float__ raised")

    def __repr__(self) -> str:
        return "<_Raises>"


class _Index:
    """An int-like object (``__index__``) with a chosen value."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def fileno(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"<_Index {self.value}>"


class _ShrinkingBuffer(bytearray):
    """A bytearray that shrinks whenever its length is asked."""

    def __len__(self) -> int:
        if super().__len__() > 1:
            try:
                del self[-1:]
            except BufferError:
                pass
        return super().__len__()


def _odd_objects() -> st.SearchStrategy[Any]:
    # Factories, so every example gets fresh (mutable) objects.
    factories: list[Callable[[], Any]] = [
        lambda: None,
        object,
        _Raises,
        lambda: _Index(-1),
        lambda: _Index(2**40),
        lambda: _Index(3),
        list,
        tuple,
        dict,
        str,
        bytes,
        lambda: memoryview(b"abc"),
        lambda: memoryview(b"abcdef")[::2],  # not C-contiguous
        lambda: memoryview(bytes(16)).cast("I"),
        lambda: bytearray(b"xy"),
        lambda: _ShrinkingBuffer(b"abcdef"),
        lambda: 1j,
        lambda: math.nan,
        lambda: True,
    ]
    return st.sampled_from(factories).map(lambda make: make())


INTS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63), 2**2000]),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
BAD = st.one_of(INTS, FLOATS, st.text(max_size=4), st.binary(max_size=8), _odd_objects())
# fd numbers that cannot be one of this process's own descriptors.
FAR_FDS = st.one_of(st.integers(max_value=-1), st.integers(min_value=1 << 20, max_value=2**70))
BAD_FD = st.one_of(
    FAR_FDS,
    FLOATS,
    st.text(max_size=4),
    _odd_objects().filter(lambda v: not isinstance(v, _Index) or v.value != 3),
)


# --- the checks


def _panic_type() -> type[BaseException]:
    from ferroloop import _ferroloop

    try:
        _ferroloop._inject_panic("now")
    except BaseException as exc:
        return type(exc)
    raise AssertionError("no PanicException")


def _outcome(call: Callable[[], Any]) -> type[BaseException] | None:
    """None if ``call()`` returned, else the type of the Exception it raised."""
    try:
        result = call()
    except Exception as exc:
        assert not isinstance(exc, SystemError), repr(exc)
        return type(exc)
    except BaseException as exc:  # PanicException, or worse
        raise AssertionError(f"{type(exc).__name__} escaped: {exc!r}") from exc
    if isinstance(result, asyncio.Handle):
        result.cancel()
    return None


def _still_runs(loop: asyncio.AbstractEventLoop) -> None:
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "alive")
    assert loop.run_until_complete(fut) == "alive"


# ferroloop raises where asyncio accepts and fails later (when the loop
# runs, killing asyncio's loop), or the two raise different types:
# (method, asyncio's outcome, ferroloop's outcome).
KNOWN = {
    # A deadline that is not a real number: TypeError at once.
    ("call_at", None, TypeError),
    ("call_later", None, TypeError),
    # `__float__` raising: asyncio's `when` is never converted until it runs.
    ("call_at", None, RuntimeError),
    # A flag whose truth value raises: asyncio stores it and fails at each
    # later `if self._debug`; ferroloop reads it once, in set_debug.
    ("set_debug", None, RuntimeError),
    # Past C long rather than C int.
    ("add_reader", OverflowError, OverflowError),
}


def _compare(
    name: str,
    loop: asyncio.AbstractEventLoop,
    call: Callable[[asyncio.AbstractEventLoop], Any],
) -> None:
    got = _outcome(lambda: call(loop))
    ref_loop = asyncio.SelectorEventLoop()
    try:
        ref_loop.set_exception_handler(lambda _loop, _context: None)
        want = _outcome(lambda: call(ref_loop))
    except AssertionError:
        want = got  # asyncio itself let a BaseException out: nothing to compare
    finally:
        ref_loop.close()
    if got is not want and (name, want, got) not in KNOWN:
        assert got is want, f"{name}: asyncio {want}, ferroloop {got}"
    _still_runs(loop)


# --- loop methods


@PROFILE
@given(callback=BAD, arg=BAD, context=st.one_of(st.none(), BAD))
def test_call_soon(loop, loop_errors, callback, arg, context):
    for name in ("call_soon", "call_soon_threadsafe"):
        _compare(name, loop, lambda lp, n=name: getattr(lp, n)(callback, arg, context=context))


@PROFILE
@given(delay=BAD)
def test_call_later(loop, loop_errors, delay):
    _compare("call_later", loop, lambda lp: lp.call_later(delay, lambda: None))


@PROFILE
@given(when=BAD)
def test_call_at(loop, loop_errors, when):
    _compare("call_at", loop, lambda lp: lp.call_at(when, lambda: None))


@PROFILE
@given(fd=BAD_FD)
def test_readers_and_writers(loop, fd):
    for name in ("add_reader", "add_writer"):
        _compare(name, loop, lambda lp, n=name: getattr(lp, n)(fd, lambda: None))
    for name in ("remove_reader", "remove_writer"):
        _compare(name, loop, lambda lp, n=name: getattr(lp, n)(fd))


@PROFILE
@given(handler=BAD)
def test_set_exception_handler(loop, handler):
    _compare("set_exception_handler", loop, lambda lp: lp.set_exception_handler(handler))
    loop.set_exception_handler(None)


@PROFILE
@given(executor=BAD)
def test_set_default_executor(loop, executor):
    def call(lp: asyncio.AbstractEventLoop) -> None:
        try:
            with warnings.catch_warnings():
                # 3.10 only warns about a non-ThreadPoolExecutor, and keeps it.
                warnings.simplefilter("ignore", DeprecationWarning)
                lp.set_default_executor(executor)
        finally:
            lp._default_executor = None  # close() would call its shutdown()

    _compare("set_default_executor", loop, call)


@PROFILE
@given(executor=st.one_of(st.none(), BAD), func=BAD)
def test_run_in_executor(loop, executor, func):
    def call(lp: asyncio.AbstractEventLoop) -> None:
        fut = lp.run_in_executor(executor, func)
        # The call itself succeeded: a bad `func` fails in the future.
        try:
            lp.run_until_complete(asyncio.wait_for(fut, 5))
        except TypeError:
            pass

    _compare("run_in_executor", loop, call)


@PROFILE
@given(value=BAD)
def test_other_loop_methods(loop, loop_errors, value):
    def debug(lp: asyncio.AbstractEventLoop) -> Any:
        try:
            lp.set_debug(value)
            return lp.get_debug()
        finally:
            lp.set_debug(False)

    _compare("set_debug", loop, debug)
    _compare("create_task", loop, lambda lp: lp.create_task(value))
    _compare("run_until_complete", loop, lambda lp: lp.run_until_complete(value))
    _compare("call_exception_handler", loop, lambda lp: lp.call_exception_handler(value))


# --- sock_* on a real socket pair


@PROFILE
@given(n=BAD, data=BAD, address=BAD)
def test_sock_methods(loop, n, data, address):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        b.send(b"hello")
        for name, args in (
            ("sock_recv", (a, n)),
            ("sock_recv_into", (a, data)),
            ("sock_sendall", (a, data)),
            ("sock_connect", (a, address)),
            ("sock_recv", (data, 1)),
            ("sock_accept", (data,)),
        ):

            def call(lp: asyncio.AbstractEventLoop, n=name, args=args) -> Any:
                return lp.run_until_complete(asyncio.wait_for(getattr(lp, n)(*args), 0.05))

            # Only "an Exception or a result": the types are not compared with
            # asyncio's here (sock_recv(s, -1) is OverflowError, ValueError there).
            _outcome(lambda c=call: c(loop))
            _still_runs(loop)
    finally:
        a.close()
        b.close()


# --- connections and servers with bad arguments (no network: sock= given)


@PROFILE
@given(sock=BAD, ssl=st.one_of(st.none(), BAD), timeout=st.one_of(st.none(), BAD))
def test_create_connection_and_server(loop, sock, ssl, timeout):
    def connection(lp: asyncio.AbstractEventLoop) -> Any:
        return lp.run_until_complete(
            asyncio.wait_for(
                lp.create_connection(
                    asyncio.Protocol, sock=sock, ssl=ssl, ssl_handshake_timeout=timeout
                ),
                1,
            )
        )

    def server(lp: asyncio.AbstractEventLoop) -> Any:
        return lp.run_until_complete(
            asyncio.wait_for(lp.create_server(asyncio.Protocol, sock=sock, backlog=timeout), 1)
        )

    _compare("create_connection", loop, connection)
    _compare("create_server", loop, server)


# --- transports


class _Pair:
    """A stream transport on `loop` over a socket pair, and the peer socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        a, self.peer = socket.socketpair()
        self.peer.setblocking(False)
        self.transport, _ = loop.run_until_complete(
            loop.create_connection(asyncio.Protocol, sock=a)
        )

    def drain(self) -> None:
        try:
            while self.peer.recv(1 << 20):
                pass
        except BlockingIOError:
            pass

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transport.abort()
        loop.run_until_complete(asyncio.sleep(0))
        self.peer.close()


def _on_transports(loop: asyncio.AbstractEventLoop, name: str, call: Callable[[Any], Any]) -> None:
    ref_loop = asyncio.SelectorEventLoop()
    ours, theirs = _Pair(loop), _Pair(ref_loop)
    try:
        got = _outcome(lambda: call(ours.transport))
        want = _outcome(lambda: call(theirs.transport))
        if got is not want and (name, want, got) not in KNOWN:
            assert got is want, f"{name}: asyncio {want}, ferroloop {got}"
        ours.drain()
    finally:
        ours.close(loop)
        theirs.close(ref_loop)
        ref_loop.close()
    _still_runs(loop)


@PROFILE
@given(data=BAD)
def test_transport_write(loop, loop_errors, data):
    _on_transports(loop, "write", lambda t: t.write(data))
    _on_transports(loop, "writelines", lambda t: t.writelines([data, data]))
    _on_transports(loop, "writelines", lambda t: t.writelines(data))


@PROFILE
@given(high=st.one_of(st.none(), BAD), low=st.one_of(st.none(), BAD))
def test_transport_write_buffer_limits(loop, loop_errors, high, low):
    def call(t: Any) -> Any:
        t.set_write_buffer_limits(high, low)
        low_now, high_now = t.get_write_buffer_limits()
        assert high_now >= low_now >= 0
        t.write(b"x" * 1000)

    _on_transports(loop, "set_write_buffer_limits", call)


@PROFILE
@given(name=BAD, default=BAD)
def test_transport_other_methods(loop, loop_errors, name, default):
    def call(t: Any) -> Any:
        t.get_extra_info(name, default)
        t.pause_reading()
        t.pause_reading()
        t.resume_reading()
        t.resume_reading()
        t.write_eof()
        t.get_write_buffer_size()
        t.is_closing()
        t.abort()
        t.write(b"after abort")

    _on_transports(loop, "other", lambda t: t.get_extra_info(name, default))
    _on_transports(loop, "sequence", call)


@PROFILE
@given(data=BAD, addr=st.one_of(st.none(), BAD))
def test_datagram_sendto(loop, loop_errors, data, addr):
    def call(lp: asyncio.AbstractEventLoop) -> Any:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        b.setblocking(False)
        try:
            transport, _ = lp.run_until_complete(
                lp.create_datagram_endpoint(asyncio.DatagramProtocol, sock=a)
            )
            try:
                transport.sendto(data, addr)
            finally:
                transport.abort()
                lp.run_until_complete(asyncio.sleep(0))
        finally:
            b.close()

    _compare("sendto", loop, call)


@PROFILE
@given(data=BAD, high=st.one_of(st.none(), BAD))
def test_write_pipe(loop, loop_errors, data, high):
    def call(lp: asyncio.AbstractEventLoop) -> Any:
        rfd, wfd = os.pipe()
        try:
            pipe = os.fdopen(wfd, "wb", buffering=0)
            transport, _ = lp.run_until_complete(lp.connect_write_pipe(asyncio.Protocol, pipe))
            try:
                transport.set_write_buffer_limits(high)
                transport.write(data)
            finally:
                transport.abort()
                lp.run_until_complete(asyncio.sleep(0))
        finally:
            os.close(rfd)

    _compare("pipe write", loop, call)


def test_panic_type_is_not_an_exception():
    # What the checks above guard against: PyO3's panic is a BaseException.
    assert not issubclass(_panic_type(), Exception)
