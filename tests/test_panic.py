"""No panic kills the loop (issue 17, section 2).

A Rust panic in ferroloop's per-event code is reported as a ``RuntimeError``
where asyncio reports an unexpected exception of that step (the exception
handler, or the transport's fatal-error path), and the loop goes on. The
test-only hook ``_ferroloop._inject_panic(site)`` makes one pass through a
native site panic. A callback that raises PyO3's ``PanicException`` (a
``BaseException``) is handled as asyncio handles any exception from a
callback, never resumed as a panic.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import pytest
from support import loops

pytestmark = pytest.mark.timeout(60)


def _panic_exception_type() -> type[BaseException]:
    if loops.FERROLOOP_IMPORT_ERROR is not None:
        pytest.skip(loops.FERROLOOP_IMPORT_ERROR)
    from ferroloop import _ferroloop

    try:
        _ferroloop._inject_panic("now")
    except BaseException as exc:  # PanicException derives from BaseException
        return type(exc)
    raise AssertionError("_inject_panic('now') did not raise")


@pytest.fixture
def inject(ferroloop_module):
    """`inject(site)` arms the hook; disarmed again at teardown."""
    from ferroloop import _ferroloop

    yield _ferroloop._inject_panic
    _ferroloop._inject_panic(None)


def _contained(context: dict) -> bool:
    exc = context.get("exception")
    return isinstance(exc, RuntimeError) and "internal error in ferroloop" in str(exc)


# --- a callback raising PanicException: both loops


def test_callback_raising_panic_exception_goes_to_handler(loop, loop_errors):
    panic_type = _panic_exception_type()
    ran = []

    def raiser():
        raise panic_type("boom")

    loop.call_soon(raiser)
    loop.call_soon(ran.append, 1)
    loop.call_later(0.001, ran.append, 2)
    loops.run(loop, asyncio.sleep(0.01))
    assert ran == [1, 2]
    assert len(loop_errors) == 1
    assert isinstance(loop_errors[0]["exception"], panic_type)
    assert loop_errors[0]["message"].startswith("Exception in callback")
    # The loop still runs after it.
    assert loops.run(loop, asyncio.sleep(0, "again")) == "again"


def test_reader_raising_panic_exception_goes_to_handler(loop, loop_errors):
    panic_type = _panic_exception_type()
    a, b = socket.socketpair()
    calls = []

    def on_readable():
        calls.append(a.recv(10))
        loop.remove_reader(a)
        raise panic_type("from a reader")

    try:
        loop.add_reader(a, on_readable)
        b.send(b"x")
        loops.run(loop, asyncio.sleep(0.05))
    finally:
        a.close()
        b.close()
    assert calls == [b"x"]
    assert [type(c["exception"]) for c in loop_errors] == [panic_type]


class _PanickingProtocol(asyncio.Protocol):
    """Raises PanicException from the callback named `where`."""

    def __init__(self, loop, panic_type, where: str) -> None:
        self.lost = loop.create_future()
        self.panic_type = panic_type
        self.where = where

    def data_received(self, data: bytes) -> None:
        if self.where == "data_received":
            raise self.panic_type("from data_received")

    def eof_received(self) -> None:
        if self.where == "eof_received":
            raise self.panic_type("from eof_received")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.set_result(exc)


@pytest.mark.parametrize("where", ["data_received", "eof_received"])
def test_protocol_raising_panic_exception_is_a_fatal_error(loop, loop_errors, where):
    panic_type = _panic_exception_type()
    a, b = socket.socketpair()

    async def main():
        transport, protocol = await loop.create_connection(
            lambda: _PanickingProtocol(loop, panic_type, where), sock=a
        )
        if where == "data_received":
            b.send(b"x")
        else:
            b.shutdown(socket.SHUT_WR)
        exc = await protocol.lost
        transport.close()
        return exc

    try:
        exc = loops.run(loop, main())
    finally:
        b.close()
    assert isinstance(exc, panic_type)
    assert [c["message"] for c in loop_errors] == [f"Fatal error: protocol.{where}() call failed."]
    assert loops.run(loop, asyncio.sleep(0, "alive")) == "alive"


def test_tls_protocol_raising_panic_exception_is_a_fatal_error(loop, loop_errors):
    from support import net, tls

    panic_type = _panic_exception_type()

    async def main():
        server = await net.start_server(
            loop, "tcp4", net.EchoProtocol, None, ssl=tls.server_context()
        )
        try:
            transport, protocol = await net.connect(
                loop,
                "tcp4",
                lambda: _PanickingProtocol(loop, panic_type, "data_received"),
                net.address_of(server),
                ssl=tls.client_context(),
            )
            transport.write(b"echo me")
            exc = await protocol.lost
            transport.close()
            return exc
        finally:
            server.close()
            await server.wait_closed()

    exc = loops.run(loop, main())
    # The panic reaches connection_lost on both loops (asyncio: through
    # SSLProtocol, which may wrap it), and the handler saw the transport's
    # fatal error with the PanicException itself.
    assert exc is not None
    errors = [c for c in loop_errors if isinstance(c.get("exception"), panic_type)]
    if sys.version_info >= (3, 11):
        message = "Fatal error: protocol.buffer_updated() call failed."
    else:  # 3.10's SSL pipe catches it itself
        message = "application protocol failed to receive SSL data"
    assert [c["message"] for c in errors] == [message]
    assert loops.run(loop, asyncio.sleep(0, "alive")) == "alive"


def test_pipe_protocol_raising_panic_exception_goes_to_handler(loop, loop_errors):
    panic_type = _panic_exception_type()
    rfd, wfd = os.pipe()

    async def main():
        pipe = os.fdopen(rfd, "rb", buffering=0)
        transport, protocol = await loop.connect_read_pipe(
            lambda: _PanickingProtocol(loop, panic_type, "data_received"), pipe
        )
        os.write(wfd, b"x")
        while not loop_errors:
            await asyncio.sleep(0.001)
        transport.close()
        await protocol.lost

    try:
        loops.run(loop, main())
    finally:
        os.close(wfd)
    assert [type(c["exception"]) for c in loop_errors] == [panic_type]


def test_datagram_protocol_raising_panic_exception_goes_to_handler(loop, loop_errors):
    panic_type = _panic_exception_type()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            raise panic_type("from datagram_received")

    async def main():
        transport, _ = await loop.create_datagram_endpoint(Proto, sock=a)
        b.send(b"x")
        while not loop_errors:
            await asyncio.sleep(0.001)
        transport.close()
        await asyncio.sleep(0)

    try:
        loops.run(loop, main())
    finally:
        b.close()
    assert [type(c["exception"]) for c in loop_errors] == [panic_type]


# --- panics inside ferroloop: the fault hook


@pytest.mark.ferroloop_only
@pytest.mark.parametrize("debug", [False, True])
def test_panic_before_a_handle_reports_it_and_goes_on(loop, loop_errors, inject, debug):
    loop.set_debug(debug)
    ran = []
    inject("handle")
    loop.call_soon(ran.append, 1)
    loop.call_soon(ran.append, 2)
    loops.run(loop, asyncio.sleep(0.01))
    # The first callback's step panicked: it is reported, the next one runs.
    assert ran == [2]
    assert len(loop_errors) == 1
    assert _contained(loop_errors[0])
    assert loop_errors[0]["message"].startswith("Exception in callback")
    assert "handle" in loop_errors[0]
    if debug:
        assert loop._current_handle is None


@pytest.mark.ferroloop_only
@pytest.mark.parametrize("site", ["timer", "poll"])
def test_panic_in_the_io_phase_reports_it_and_goes_on(loop, loop_errors, inject, site):
    ran = []
    loop.call_soon(ran.append, "soon")
    loop.call_later(0.001, ran.append, "later")
    inject(site)
    loops.run(loop, asyncio.sleep(0.02))
    # Nothing is lost: the timer stays in the heap, epoll reports again.
    assert sorted(ran) == ["later", "soon"]
    assert len(loop_errors) == 1
    assert _contained(loop_errors[0])
    assert loop_errors[0]["message"] == "Unexpected error in the event loop"


@pytest.mark.ferroloop_only
def test_io_phase_panicking_twice_in_a_row_ends_run_forever(loop, loop_errors, inject):
    # Not a passing fault: run_forever ends with it rather than spin reporting it.
    inject("poll")
    loop.call_soon(inject, "poll")
    with pytest.raises(RuntimeError, match="internal error in ferroloop"):
        loop.run_forever()
    assert len(loop_errors) == 1
    # The loop can run again.
    assert loops.run(loop, asyncio.sleep(0, "again")) == "again"


class _Recorder(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lost = loop.create_future()
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.set_result(exc)


@pytest.mark.ferroloop_only
def test_panic_in_transport_read_is_a_fatal_error(loop, loop_errors, inject):
    a, b = socket.socketpair()

    async def main():
        transport, protocol = await loop.create_connection(lambda: _Recorder(loop), sock=a)
        inject("transport_read")
        b.send(b"x")
        exc = await protocol.lost
        transport.close()
        return exc

    try:
        exc = loops.run(loop, main())
        # Another connection still works on the same loop.
        assert loops.run(loop, _echo_once(loop)) == b"ping"
    finally:
        b.close()
    assert isinstance(exc, RuntimeError)
    assert [c["message"] for c in loop_errors] == ["Fatal read error on socket transport"]
    assert _contained(loop_errors[0])


async def _echo_once(loop: asyncio.AbstractEventLoop) -> bytes:
    c, d = socket.socketpair()
    try:
        transport, protocol = await loop.create_connection(lambda: _Recorder(loop), sock=c)
        d.send(b"ping")
        while not protocol.data:
            await asyncio.sleep(0.001)
        transport.close()
        await protocol.lost
        return bytes(protocol.data)
    finally:
        d.close()


@pytest.mark.ferroloop_only
def test_panic_in_transport_write_is_a_fatal_error(loop, loop_errors, inject):
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    async def main():
        transport, protocol = await loop.create_connection(lambda: _Recorder(loop), sock=a)
        transport.write(b"x" * (1 << 20))
        assert transport.get_write_buffer_size() > 0
        inject("transport_write")
        b.setblocking(False)
        while not protocol.lost.done():
            try:
                b.recv(1 << 16)
            except BlockingIOError:
                pass
            await asyncio.sleep(0.001)
        return protocol.lost.result()

    try:
        exc = loops.run(loop, main())
    finally:
        b.close()
    assert isinstance(exc, RuntimeError)
    assert [c["message"] for c in loop_errors] == ["Fatal write error on socket transport"]


@pytest.mark.ferroloop_only
def test_panic_in_pipe_read_is_a_fatal_error(loop, loop_errors, inject):
    rfd, wfd = os.pipe()

    async def main():
        pipe = os.fdopen(rfd, "rb", buffering=0)
        transport, protocol = await loop.connect_read_pipe(lambda: _Recorder(loop), pipe)
        inject("pipe_read")
        os.write(wfd, b"x")
        exc = await protocol.lost
        transport.close()
        return exc

    try:
        exc = loops.run(loop, main())
    finally:
        os.close(wfd)
    assert isinstance(exc, RuntimeError)
    assert [c["message"] for c in loop_errors] == ["Fatal read error on pipe transport"]


@pytest.mark.ferroloop_only
def test_panic_in_a_called_transport_method_is_a_runtime_error(loop, inject):
    a, b = socket.socketpair()

    async def main():
        transport, protocol = await loop.create_connection(lambda: _Recorder(loop), sock=a)
        inject("write")
        with pytest.raises(RuntimeError, match="internal error in ferroloop"):
            transport.write(b"lost")
        # The transport and the loop go on.
        transport.write(b"kept")
        transport.close()
        await protocol.lost

    try:
        loops.run(loop, main())
        assert b.recv(100) == b"kept"
    finally:
        b.close()


@pytest.mark.ferroloop_only
def test_panic_in_a_called_loop_method_is_a_runtime_error(loop, loop_errors, inject):
    async def main():
        inject("call")  # fires in call_later, as in any other native method
        with pytest.raises(RuntimeError, match="internal error in ferroloop"):
            loop.call_later(0, lambda: None)
        # asyncio's own code calling it: the awaiting task gets the exception.
        inject("call")
        task = loop.create_task(asyncio.sleep(0.001))
        with pytest.raises(RuntimeError, match="internal error in ferroloop"):
            await task
        assert isinstance(task.exception(), Exception)
        # The loop goes on: a timer still fires.
        fired = loop.create_future()
        loop.call_later(0.001, fired.set_result, "fired")
        return await asyncio.wait_for(fired, 5)

    assert loops.run(loop, main()) == "fired"
    assert loop_errors == []


@pytest.mark.ferroloop_only
def test_unknown_site_is_a_value_error(inject):
    with pytest.raises(ValueError, match="unknown panic site"):
        inject("nowhere")


# --- argument errors that used to reach arithmetic: both loops


async def _transport(loop: asyncio.AbstractEventLoop):
    a, b = socket.socketpair()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=a)
    return transport, b


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"high": -1}, ValueError),
        ({"low": -1}, ValueError),
        ({"high": 1, "low": 2}, ValueError),
        ({"high": "x"}, TypeError),
        ({"low": "x"}, TypeError),
        ({"high": float("nan")}, ValueError),
        ({"low": 2**62}, None),  # `4 * low` is past i64
        ({"high": 2**70}, None),
        ({"high": 2**70, "low": 2**69}, None),
        ({"high": 1.5}, None),
        ({"high": True, "low": False}, None),
    ],
)
def test_set_write_buffer_limits_arguments(loop, run, kwargs, error):
    async def main():
        transport, peer = await _transport(loop)
        try:
            if error is None:
                transport.set_write_buffer_limits(**kwargs)
                low, high = transport.get_write_buffer_limits()
                assert high >= low >= 0
                transport.write(b"still writes")
                assert peer.recv(100) == b"still writes"
            else:
                with pytest.raises(error):
                    transport.set_write_buffer_limits(**kwargs)
        finally:
            transport.close()
            peer.close()
        await asyncio.sleep(0)

    run(main())


def test_set_write_buffer_limits_message(loop, run):
    async def main():
        transport, peer = await _transport(loop)
        try:
            with pytest.raises(ValueError, match=r"^high \(1\) must be >= low \(2\) must be >= 0$"):
                transport.set_write_buffer_limits(1, 2)
        finally:
            transport.close()
            peer.close()
        await asyncio.sleep(0)

    run(main())


@pytest.mark.parametrize("fd", [2**31, 2**40, 2**70, 10**6])
@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_remove_out_of_range_fd_is_false(loop, fd, method):
    assert getattr(loop, method)(fd) is False


@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_remove_negative_fd_is_value_error(loop, method):
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        getattr(loop, method)(-1)


@pytest.mark.parametrize("fd", [2**31, 2**40, 2**70])
def test_add_reader_out_of_range_fd_is_overflow_error(loop, fd):
    # Message differs past C long ("C long" here, "C int" on asyncio).
    with pytest.raises(OverflowError):
        loop.add_reader(fd, lambda: None)
    assert loops.run(loop, asyncio.sleep(0, "ok")) == "ok"


def test_sleep_nan(loop, run):
    # 3.13's asyncio.sleep rejects NaN itself. Before, a NaN deadline is due
    # at once on ferroloop; on asyncio, once it reaches the top of the timer
    # heap, so only with no other timer pending (not under `run`'s wait_for).
    if sys.version_info >= (3, 13):
        with pytest.raises(ValueError, match="Invalid delay: NaN"):
            run(asyncio.sleep(float("nan")))
    else:
        assert loop.run_until_complete(asyncio.sleep(float("nan"), "done")) == "done"
    assert run(asyncio.sleep(0, "after")) == "after"


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), float("-inf"), -(2**60), 2**70])
def test_call_later_odd_delays_keep_the_loop_running(loop, delay):
    handle = loop.call_later(delay, lambda: None)
    assert loops.run(loop, asyncio.sleep(0.001, "ok")) == "ok"
    handle.cancel()


@pytest.mark.parametrize("delay", [2**2000, -(2**2000)])
def test_call_later_int_too_large_for_float(loop, delay):
    with pytest.raises(OverflowError):
        loop.call_later(delay, lambda: None)


@pytest.mark.ferroloop_only
def test_panic_in_a_waiting_sock_op_fails_its_future(loop, loop_errors, inject):
    a, b = socket.socketpair()
    a.setblocking(False)

    async def main():
        pending = loop.create_task(loop.sock_recv(a, 10))
        await asyncio.sleep(0.01)
        inject("sock_op")
        b.send(b"x")
        with pytest.raises(RuntimeError, match="internal error in ferroloop"):
            await asyncio.wait_for(pending, 5)
        # The socket and the loop still work: the byte was not consumed.
        return await asyncio.wait_for(loop.sock_recv(a, 10), 5)

    try:
        assert loops.run(loop, main()) == b"x"
    finally:
        a.close()
        b.close()
    assert loop_errors == []
