"""TLS: ssl= on connections and servers, start_tls, the TLS transport and its errors.

Certificates are made in the run (support/tls.py): a CA that signs the leaves, and a
self-signed leaf. Every case runs on asyncio and on ferroloop with the same expectations.
"""

from __future__ import annotations

import asyncio
import pathlib
import socket
import ssl
import subprocess
import sys
import weakref

import pytest
from support import net, tls

# Before 3.11 the TLS transport is asyncio's older SSL pipe; some error paths differ by version.
PY311 = sys.version_info >= (3, 11)
# The exceptions that a refused or broken TLS connection may end with, depending on which side
# notices first; a test that accepts these also checks that no data got through.
CONNECTION_FAILED = (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)


def _server_hostname(kind: str) -> dict:
    # A Unix socket has no host name to check against: the client names the server itself.
    return {"server_hostname": tls.HOSTNAME} if kind == "unix" else {}


async def _tls_echo_server(loop, kind, tmp_path, context=None, **kwargs):
    return await net.start_server(
        loop, kind, net.EchoProtocol, tmp_path, ssl=context or tls.server_context(), **kwargs
    )


async def _recording_server(loop, context=None, **kwargs):
    """A TLS server on 127.0.0.1 whose factory keeps every protocol it made."""
    factory = net.Factory(loop)
    server = await net.start_server(
        loop, "tcp4", factory, None, ssl=context or tls.server_context(), **kwargs
    )
    return server, factory


async def _tls_client(loop, server, context=None, **kwargs):
    """A recording client connected over TLS to ``server`` (on 127.0.0.1)."""
    return await net.connect(
        loop,
        "tcp4",
        lambda: net.RecordingProtocol(loop),
        net.address_of(server),
        ssl=context or tls.client_context(),
        **kwargs,
    )


async def _close(server):
    server.close()
    await server.wait_closed()


# --- connections and servers ------------------------------------------------------------------


def test_echo_and_extra_info(loop, run, kind, tmp_path):
    async def main():
        server = await _tls_echo_server(loop, kind, tmp_path)
        context = tls.client_context()
        transport, proto = await net.connect(
            loop,
            kind,
            lambda: net.RecordingProtocol(loop),
            net.address_of(server),
            ssl=context,
            **_server_hostname(kind),
        )
        data = net.payload(1024 * 1024)
        transport.write(data)
        got = await proto.wait_bytes(len(data))
        info = {
            "ssl_object": isinstance(transport.get_extra_info("ssl_object"), ssl.SSLObject),
            "peercert_names": ("DNS", tls.HOSTNAME)
            in transport.get_extra_info("peercert")["subjectAltName"],
            "cipher": len(transport.get_extra_info("cipher")),
            "compression": transport.get_extra_info("compression"),
            "sslcontext": transport.get_extra_info("sslcontext") is context,
            "socket": transport.get_extra_info("socket").family == net.FAMILY[kind],
            "peername": transport.get_extra_info("peername") == server.sockets[0].getsockname(),
            "can_write_eof": transport.can_write_eof(),
        }
        transport.close()
        await proto.lost
        await _close(server)
        return net.digest(got), net.digest(data), info, proto.lost_exc

    got, sent, info, lost = run(main())
    assert got == sent
    assert info == {
        "ssl_object": True,
        "peercert_names": True,
        "cipher": 3,
        "compression": None,
        "sslcontext": True,
        "socket": True,
        "peername": True,
        "can_write_eof": False,
    }
    assert lost == [None]


def test_write_eof_is_refused(loop, run):
    async def main():
        server = await _tls_echo_server(loop, "tcp4", None)
        transport, _ = await net.connect(
            loop, "tcp4", asyncio.Protocol, net.address_of(server), ssl=tls.client_context()
        )
        try:
            with pytest.raises(NotImplementedError):
                transport.write_eof()
        finally:
            transport.close()
            await _close(server)

    run(main())


def test_streams_over_tls(loop, run, kind, tmp_path):
    async def handle(reader, writer):
        line = await reader.readline()
        writer.write(line.upper())
        body = await reader.readexactly(100_000)
        writer.write(net.digest(body).encode() + b"\n")
        await writer.drain()
        writer.close()

    async def main():
        server = await net.start_stream_server(kind, handle, tmp_path, ssl=tls.server_context())
        reader, writer = await net.open_connection(
            kind, net.address_of(server), ssl=tls.client_context(), **_server_hostname(kind)
        )
        body = net.payload(100_000, seed=3)
        writer.write(b"hello tls\n" + body)
        await writer.drain()
        first = await reader.readline()
        second = await reader.readline()
        rest = await reader.read()
        writer.close()
        await writer.wait_closed()
        await _close(server)
        return first, second.strip().decode(), rest, net.digest(body)

    first, got_digest, rest, digest = run(main())
    assert (first, got_digest, rest) == (b"HELLO TLS\n", digest, b"")


def test_sixteen_mib_echo_with_a_slow_reader(loop, run):
    size = 16 * net.MiB
    peaks = []

    class Echo(net.EchoProtocol):
        def data_received(self, data):
            super().data_received(data)
            peaks.append(self.transport.get_write_buffer_size())

    async def main():
        server = await net.start_server(loop, "tcp4", Echo, None, ssl=tls.server_context())
        reader, writer = await asyncio.open_connection(
            *net.address_of(server), ssl=tls.client_context()
        )
        data = net.payload(size, seed=16)

        async def send():
            for i in range(0, size, 256 * 1024):
                writer.write(data[i : i + 256 * 1024])
                await writer.drain()

        sender = asyncio.ensure_future(send())
        got = bytearray()
        while len(got) < size:
            chunk = await reader.read(64 * 1024)
            assert chunk, f"EOF after {len(got)} bytes"
            got += chunk
            if len(got) % (1024 * 1024) < 64 * 1024:
                await asyncio.sleep(0.005)
        await sender
        writer.close()
        await writer.wait_closed()
        await _close(server)
        return net.digest(bytes(got)), net.digest(data)

    got, sent = run(main(), timeout=60)
    assert got == sent
    # The echo stops reading while its peer does not read: what it holds stays bounded.
    assert max(peaks) < 4 * net.MiB


def test_two_hundred_concurrent_connections(loop, run):
    async def main():
        server = await _tls_echo_server(loop, "tcp4", None, backlog=256)
        context = tls.client_context()

        async def one(i):
            reader, writer = await asyncio.open_connection(*net.address_of(server), ssl=context)
            message = b"%d\n" % i
            writer.write(message)
            line = await reader.readline()
            writer.close()
            await writer.wait_closed()
            return line == message

        results = await asyncio.gather(*(one(i) for i in range(200)))
        await _close(server)
        return results

    assert run(main(), timeout=60) == [True] * 200


# 200 KiB is thirteen records, written with the close_notify behind them at once: the peer
# decrypts many records, then the end, from what one read brings in.
@pytest.mark.parametrize("size", [10, 200 * 1024])
def test_close_sends_close_notify(loop, run, size):
    payload = net.payload(size)

    async def main():
        server, factory = await _recording_server(loop)
        transport, proto = await _tls_client(loop, server)
        peer = await factory.nth(0)
        transport.write(payload)
        transport.close()
        await peer.lost
        await proto.lost
        await _close(server)
        return bytes(peer.data), peer.events, peer.lost_exc

    data, events, lost = run(main())
    assert data == payload
    # The peer sees a clean TLS end: connection_lost(None), after eof_received from 3.11 (the
    # close_notify; 3.10's SSL pipe does not report it).
    assert events == ["made", "data", "eof", "lost"] if PY311 else ["made", "data", "lost"]
    assert lost == [None]


def test_abort_drops_the_connection(loop, run):
    async def main():
        server, factory = await _recording_server(loop)
        transport, proto = await _tls_client(loop, server)
        peer = await factory.nth(0)
        transport.abort()
        await proto.lost
        await peer.lost
        await _close(server)
        return proto.lost_exc, "data" in peer.events

    lost, peer_got_data = run(main())
    assert lost == [None]
    assert not peer_got_data


def test_alpn(loop, run):
    async def main():
        server = await _tls_echo_server(
            loop, "tcp4", None, context=tls.server_context(alpn=["h2", "http/1.1"])
        )
        transport, _ = await net.connect(
            loop,
            "tcp4",
            asyncio.Protocol,
            net.address_of(server),
            ssl=tls.client_context(alpn=["http/1.1"]),
        )
        selected = transport.get_extra_info("ssl_object").selected_alpn_protocol()
        transport.close()
        await _close(server)
        return selected

    assert run(main()) == "http/1.1"


def test_mutual_tls(loop, run):
    async def main():
        server, factory = await _recording_server(loop, tls.mutual_server_context())
        transport, proto = await _tls_client(loop, server, tls.client_context(cert=True))
        peer = await factory.nth(0)
        client_cert = peer.transport.get_extra_info("peercert")
        transport.close()
        await peer.lost
        await _close(server)
        return dict(x[0] for x in client_cert["subject"])["commonName"]

    assert run(main()) == "test client"


def test_mutual_tls_without_a_client_certificate_gets_no_service(loop, run, loop_errors):
    async def main():
        server, factory = await _recording_server(loop, tls.mutual_server_context())
        failure = None
        try:
            # With TLS 1.3 the client may finish its handshake before the server refuses it;
            # the refusal then arrives on the first read.
            reader, writer = await asyncio.open_connection(
                *net.address_of(server), ssl=tls.client_context()
            )
            writer.write(b"hello\n")
            got = await reader.read(100)
            writer.close()
        except CONNECTION_FAILED as exc:
            failure, got = exc, b""
        await asyncio.sleep(0.05)
        await _close(server)
        return failure, got, [p.events for p in factory.made]

    failure, got, server_events = run(main())
    assert got == b""
    # The server's protocol is only connected once the handshake succeeded: never here.
    assert all("made" not in events for events in server_events)


# --- certificate verification ------------------------------------------------------------------


def _verification_failure(loop, run, server_context, client_context, **kwargs):
    async def main():
        server, factory = await _recording_server(loop, server_context)
        try:
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await net.connect(
                    loop,
                    "tcp4",
                    asyncio.Protocol,
                    net.address_of(server),
                    ssl=client_context,
                    **kwargs,
                )
            await asyncio.sleep(0.05)
            return info.value, [p.events for p in factory.made]
        finally:
            await _close(server)

    return run(main())


def test_hostname_mismatch(loop, run, loop_errors):
    exc, server_events = _verification_failure(
        loop, run, tls.server_context(), tls.client_context(), server_hostname="wrong.invalid"
    )
    assert "Hostname mismatch" in exc.verify_message or "wrong.invalid" in str(exc)
    assert all("made" not in events for events in server_events)


def test_expired_certificate(loop, run, loop_errors):
    exc, server_events = _verification_failure(
        loop, run, tls.server_context(expired=True), tls.client_context()
    )
    assert exc.verify_message == "certificate has expired"
    assert all("made" not in events for events in server_events)


def test_untrusted_self_signed_certificate(loop, run, loop_errors, tmp_path):
    exc, _ = _verification_failure(
        loop, run, tls.self_signed_server_context(tmp_path), tls.client_context()
    )
    assert exc.verify_message == "self-signed certificate" or "self signed" in exc.verify_message


def test_trusted_self_signed_certificate(loop, run, tmp_path):
    async def main():
        server = await _tls_echo_server(
            loop, "tcp4", None, context=tls.self_signed_server_context(tmp_path)
        )
        transport, proto = await _tls_client(loop, server, tls.self_signed_client_context())
        transport.write(b"ping")
        got = await proto.wait_bytes(4)
        transport.close()
        await _close(server)
        return got

    assert run(main()) == b"ping"


# --- TLS meets plaintext -----------------------------------------------------------------------


def test_plaintext_client_to_tls_server_gets_no_data(loop, run, loop_errors):
    async def main():
        server, factory = await _recording_server(loop)
        sock = socket.create_connection(net.address_of(server))
        sock.setblocking(False)
        received = bytearray()
        try:
            await loop.sock_sendall(sock, b"GET / HTTP/1.0\r\n\r\n")
            while chunk := await asyncio.wait_for(loop.sock_recv(sock, 4096), 5):
                received += chunk
        except ConnectionError:
            pass
        finally:
            sock.close()
        await _close(server)
        return bytes(received), [p.events for p in factory.made]

    received, server_events = run(main())
    assert b"GET" not in received and b"HTTP" not in received
    assert all("made" not in events for events in server_events)


def test_tls_client_to_plaintext_server_fails(loop, run):
    async def main():
        handled = loop.create_future()

        async def handle(reader, writer):
            writer.write(b"220 plaintext greeting, not TLS\r\n" * 4)
            await reader.read()  # until the client gives up
            writer.close()
            handled.set_result(None)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        try:
            with pytest.raises(CONNECTION_FAILED) as info:
                await asyncio.open_connection(*net.address_of(server), ssl=tls.client_context())
            await handled
            return info.value
        finally:
            await _close(server)

    assert isinstance(run(main()), ssl.SSLError)


def test_nothing_is_sent_in_the_clear(loop, run, loop_errors):
    # The client's application data waits for the handshake; a peer that never completes one
    # only ever sees the TLS ClientHello.
    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)

        class Eager(asyncio.Protocol):
            def connection_made(self, transport):
                transport.write(b"SECRET")

        connecting = asyncio.ensure_future(
            loop.create_connection(
                Eager, *listener.getsockname(), ssl=tls.client_context(), ssl_handshake_timeout=0.5
            )
        )
        conn, _ = await loop.sock_accept(listener)
        received = bytearray()
        try:
            while chunk := await asyncio.wait_for(loop.sock_recv(conn, 4096), 2):
                received += chunk
        except (ConnectionError, asyncio.TimeoutError):
            pass
        conn.close()
        listener.close()
        with pytest.raises((ConnectionAbortedError, asyncio.TimeoutError, ConnectionError)):
            await connecting
        return bytes(received)

    received = run(main())
    assert received[:1] == b"\x16"  # a TLS handshake record
    assert b"SECRET" not in received


def test_handshake_timeout_against_a_silent_server(loop, run, loop_errors):
    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        t0 = loop.time()
        try:
            with pytest.raises((ConnectionAbortedError, asyncio.TimeoutError)) as info:
                await loop.create_connection(
                    asyncio.Protocol,
                    *listener.getsockname(),
                    ssl=tls.client_context(),
                    ssl_handshake_timeout=0.2,
                )
            return type(info.value), loop.time() - t0
        finally:
            listener.close()

    exc_type, elapsed = run(main())
    assert 0.15 < elapsed < 3
    assert exc_type is ConnectionAbortedError


def test_handshake_timeout_against_a_silent_client(loop, run, loop_errors):
    async def main():
        server, factory = await _recording_server(loop, ssl_handshake_timeout=0.2)
        sock = socket.create_connection(net.address_of(server))
        sock.setblocking(False)
        t0 = loop.time()
        try:
            received = await asyncio.wait_for(loop.sock_recv(sock, 100), 5)
        except ConnectionError:
            received = b""
        finally:
            sock.close()
        elapsed = loop.time() - t0
        await _close(server)
        return received, elapsed, factory.made

    received, elapsed, made = run(main())
    assert received == b""  # the server hung up
    assert 0.15 < elapsed < 3
    assert made == [] or all("made" not in p.events for p in made)


# --- start_tls ---------------------------------------------------------------------------------


def test_start_tls_upgrades_a_plaintext_connection(loop, run, kind, tmp_path):
    class Server(asyncio.Protocol):
        def __init__(self):
            self.plain = bytearray()

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            if self.plain is not None:
                self.plain += data
                if self.plain.endswith(b"STARTTLS\n"):
                    self.transport.write(b"OK\n")
                    self.transport.pause_reading()
                    self.plain = None
                    asyncio.ensure_future(self.upgrade())
                return
            self.transport.write(data.upper())

        async def upgrade(self):
            self.transport = await loop.start_tls(
                self.transport, self, tls.server_context(), server_side=True
            )
            # The client sends only after this: before it, data_received could still see
            # the plaintext transport in self.transport.
            self.transport.write(b"READY\n")

    async def main():
        server = await net.start_server(loop, kind, Server, tmp_path)
        transport, proto = await net.connect(
            loop, kind, lambda: net.RecordingProtocol(loop), net.address_of(server)
        )
        transport.write(b"hello\nSTARTTLS\n")
        await proto.wait_bytes(3)
        assert bytes(proto.data) == b"OK\n"
        proto.data.clear()
        secure = await loop.start_tls(
            transport, proto, tls.client_context(), server_hostname=tls.HOSTNAME
        )
        await proto.wait_bytes(6)
        secure.write(b"over tls")
        got = await proto.wait_bytes(14)
        cipher = secure.get_extra_info("cipher")
        secure.close()
        await proto.lost
        await _close(server)
        return got, cipher is not None

    assert run(main()) == (b"READY\nOVER TLS", True)


def test_start_tls_rejects_a_non_context(loop, run, tmp_path):
    client, accepted = net.connected_pair("tcp4", tmp_path)

    async def main():
        transport, proto = await loop.create_connection(asyncio.Protocol, sock=client)
        try:
            with pytest.raises(TypeError, match="sslcontext is expected to be an instance"):
                await loop.start_tls(transport, proto, object())
        finally:
            transport.close()

    try:
        run(main())
    finally:
        accepted.close()


@pytest.mark.skipif(not PY311, reason="StreamWriter.start_tls is new in 3.11")
def test_stream_writer_start_tls(loop, run):
    async def main():
        async def handle(reader, writer):
            assert await reader.readline() == b"STARTTLS\n"
            writer.write(b"OK\n")
            await writer.drain()
            await writer.start_tls(tls.server_context())
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*net.address_of(server))
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"OK\n"
        await writer.start_tls(tls.client_context(), server_hostname=tls.HOSTNAME)
        writer.write(b"secret\n")
        line = await reader.readline()
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        await writer.wait_closed()
        await _close(server)
        return line, version.startswith("TLS")

    assert run(main()) == (b"SECRET\n", True)


# --- more ways in ------------------------------------------------------------------------------


def test_ssl_true_means_the_default_verifying_client_context(loop, run, loop_errors):
    # ssl=True is ssl.create_default_context(): the system's trust store, which does not hold
    # the test CA, so the handshake fails verification instead of going ahead unverified.
    exc, _ = _verification_failure(loop, run, tls.server_context(), True)
    assert "unable to get local issuer certificate" in exc.verify_message


def test_connect_accepted_socket_with_ssl(loop, run, tmp_path):
    client_sock, server_sock = net.connected_pair("tcp4", tmp_path)

    async def main():
        accepted = loop.create_future()

        def factory():
            proto = net.EchoProtocol()
            accepted.set_result(proto)
            return proto

        serving = asyncio.ensure_future(
            loop.connect_accepted_socket(factory, server_sock, ssl=tls.server_context())
        )
        transport, proto = await loop.create_connection(
            lambda: net.RecordingProtocol(loop),
            sock=client_sock,
            ssl=tls.client_context(),
            server_hostname=tls.HOSTNAME,
        )
        server_transport, _ = await serving
        transport.write(b"accepted and secured")
        got = await proto.wait_bytes(20)
        secured = server_transport.get_extra_info("cipher") is not None
        transport.close()
        await proto.lost
        server_transport.close()
        return got, secured

    assert run(main()) == (b"accepted and secured", True)


def test_buffered_protocol_over_tls(loop, run):
    class Echo(net.BufferedEchoProtocol):
        # A memoryview: asyncio's SSL protocol fills the buffer through slices of it, and a
        # bytearray's slice would be a copy.
        def get_buffer(self, sizehint):
            return memoryview(super().get_buffer(sizehint))

    async def main():
        server = await net.start_server(loop, "tcp4", Echo, None, ssl=tls.server_context())
        transport, proto = await _tls_client(loop, server)
        data = net.payload(2 * net.MiB, seed=5)
        transport.write(data)
        got = await proto.wait_bytes(len(data))
        transport.close()
        await _close(server)
        return net.digest(got), net.digest(data)

    got, sent = run(main())
    assert got == sent


@pytest.mark.skipif(not PY311, reason="ssl_shutdown_timeout is new in 3.11")
def test_shutdown_timeout_when_the_peer_never_answers_close_notify(loop, run, loop_errors):
    async def main():
        server, factory = await _recording_server(loop)
        transport, proto = await _tls_client(loop, server, ssl_shutdown_timeout=0.3)
        peer = await factory.nth(0)
        peer.transport.pause_reading()  # the close_notify is never read, so never answered
        await asyncio.sleep(0.05)
        t0 = loop.time()
        transport.close()
        await proto.lost
        elapsed = loop.time() - t0
        peer.transport.abort()
        await _close(server)
        return elapsed

    assert 0.25 < run(main()) < 3


def test_pause_and_resume_reading(loop, run):
    async def main():
        server, factory = await _recording_server(loop)
        transport, proto = await _tls_client(loop, server)
        peer = await factory.nth(0)
        transport.pause_reading()
        paused = transport.is_reading()
        peer.transport.write(b"held back")
        await asyncio.sleep(0.1)
        seen_while_paused = bytes(proto.data)
        transport.resume_reading()
        got = await proto.wait_bytes(9)
        resumed = transport.is_reading()
        transport.close()
        await peer.lost
        await _close(server)
        return paused, seen_while_paused, got, resumed

    assert run(main()) == (False, b"", b"held back", True)


def test_write_accepts_bytes_like_and_refuses_the_rest(loop, run):
    async def main():
        server = await _tls_echo_server(loop, "tcp4", None)
        transport, proto = await _tls_client(loop, server)
        errors = []
        for bad in ("text", 7, None, [b"x"]):
            try:
                transport.write(bad)
            except TypeError as exc:
                errors.append(str(exc))
        transport.write(b"")
        transport.write(bytearray())
        chunks = [b"bytes,", bytearray(b"bytearray,"), memoryview(b"memoryview,"), b"end"]
        for chunk in chunks:
            transport.write(chunk)
        # A bytearray changed after write() was sent as it was.
        reused = bytearray(b"first")
        transport.write(reused)
        reused[:] = b"XXXXX"
        transport.writelines([b"-", bytearray(b"lines")])
        got = await proto.wait_bytes(len(b"bytes,bytearray,memoryview,endfirst-lines"))
        transport.close()
        await proto.lost
        await _close(server)
        return errors, got

    errors, got = run(main())
    assert errors == [
        "data: expecting a bytes-like instance, got str",
        "data: expecting a bytes-like instance, got int",
        "data: expecting a bytes-like instance, got NoneType",
        "data: expecting a bytes-like instance, got list",
    ]
    assert got == b"bytes,bytearray,memoryview,endfirst-lines"


def test_writes_after_close_are_dropped(loop, run):
    async def main():
        server = await _tls_echo_server(loop, "tcp4", None)
        transport, proto = await _tls_client(loop, server)
        transport.write(b"before")
        await proto.wait_bytes(6)
        transport.close()
        transport.write(b"after close")
        await proto.lost
        transport.write(b"after lost")
        await _close(server)
        return bytes(proto.data), proto.lost_exc

    assert run(main()) == (b"before", [None])


def _reads_recorded(asked: list):
    """A client context whose SSLObjects append the size each read asks for to ``asked``."""

    class RecordingSSLObject(ssl.SSLObject):
        def read(self, len=1024, buffer=None):
            asked.append(len)
            return super().read(len, buffer)

    context = tls.client_context()
    context.sslobject_class = RecordingSSLObject
    return context


def test_context_with_its_own_sslobject_class(loop, run):
    asked = []

    async def main():
        server = await _tls_echo_server(loop, "tcp4", None)
        transport, proto = await _tls_client(loop, server, _reads_recorded(asked))
        data = net.payload(300 * 1024)
        transport.write(data)
        got = await proto.wait_bytes(len(data))
        transport.close()
        await proto.lost
        await _close(server)
        return got == data, len(asked) > 0

    assert run(main()) == (True, True)


def test_is_closing(loop, run):
    """is_closing() is False while the TLS transport is open and True once it was closed here
    or (from 3.11) the connection was lost, also through a method fetched before."""

    async def main():
        server, factory = await _recording_server(loop)
        transport, proto = await _tls_client(loop, server)
        early = transport.is_closing
        transport.write(b"ping")
        accepted = await factory.nth(0)
        await accepted.wait_bytes(4)
        seen = [transport.is_closing(), accepted.transport.is_closing()]
        transport.close()
        seen += [transport.is_closing(), early()]
        await accepted.lost
        await proto.lost
        seen += [accepted.transport.is_closing(), transport.is_closing()]
        await _close(server)
        return seen

    # 3.10's SSL protocol does not mark its app transport closed when the connection is lost.
    assert run(main()) == [False, False, True, True, PY311, True]


@pytest.mark.skipif(not PY311, reason="3.10's SSL pipe has no max_size")
def test_reads_smaller_than_a_record(loop, run):
    """With the protocol's max_size below a record, each record takes several reads, some of
    them filling exactly what they asked for; sizes around the 100-byte reads and the 16 KiB
    records must all arrive whole, in order, without waiting for more input."""
    sizes = [1, 99, 100, 101, 200, 1000, 16 * 1024, 16 * 1024 + 1, 64 * 1024]

    async def main():
        server = await _tls_echo_server(loop, "tcp4", None)
        transport, proto = await _tls_client(loop, server)
        transport._ssl_protocol.max_size = 100
        sent = b""
        for i, size in enumerate(sizes):
            message = net.payload(size, seed=i)
            transport.write(message)
            sent += message
            await asyncio.wait_for(proto.wait_bytes(len(sent)), 10)
        transport.close()
        await proto.lost
        await _close(server)
        return bytes(proto.data) == sent, len(proto.data)

    assert run(main()) == (True, sum(sizes))


@pytest.mark.skipif(not PY311, reason="3.10's SSL pipe has no max_size")
def test_max_size_follows_the_class_and_the_instance(loop, run, monkeypatch):
    """Each read asks for the protocol's max_size as it is at that moment: the class's,
    changed between messages, then one set on the instance, then the class's again."""
    from asyncio import sslproto

    asked = []

    async def main():
        server = await _tls_echo_server(loop, "tcp4", None)
        transport, proto = await _tls_client(loop, server, _reads_recorded(asked))
        ssl_protocol = transport._ssl_protocol
        phases = []
        sent = 0

        async def exchange():
            nonlocal sent
            del asked[:]
            for _ in range(3):
                transport.write(b"x" * 100)
                sent += 100
                await proto.wait_bytes(sent)
            phases.append(set(asked))

        await exchange()
        monkeypatch.setattr(sslproto.SSLProtocol, "max_size", 1000)
        await exchange()
        ssl_protocol.max_size = 500
        await exchange()
        del ssl_protocol.max_size
        await exchange()
        monkeypatch.undo()
        await exchange()
        transport.close()
        await proto.lost
        await _close(server)
        return phases

    assert run(main()) == [{256 * 1024}, {1000}, {500}, {1000}, {256 * 1024}]


@pytest.mark.skipif(not PY311, reason="3.10's SSLProtocol is not a BufferedProtocol")
def test_the_ssl_protocol_is_asyncios_own(loop, run):
    # ferroloop's transport never asks SSLProtocol for its read buffer, so it is made without
    # one; the object must still be asyncio's class with asyncio's settings, and hand out the
    # buffer should anything ask.
    from asyncio import sslproto

    async def main():
        server = await _tls_echo_server(loop, "tcp4", None)
        transport, proto = await _tls_client(loop, server)
        ssl_protocol = transport._ssl_protocol
        shape = (
            type(ssl_protocol) is sslproto.SSLProtocol,
            "max_size" in vars(ssl_protocol),
            ssl_protocol.max_size,
            len(ssl_protocol.get_buffer(-1)),
        )
        transport.write(b"still echoes")
        got = await proto.wait_bytes(12)
        transport.close()
        await proto.lost
        await _close(server)
        return shape, got

    assert run(main()) == ((True, False, 256 * 1024, 256 * 1024), b"still echoes")


@pytest.mark.skipif(not PY311, reason="3.10's SSL pipe does not report close_notify as EOF")
def test_a_finished_connection_keeps_no_hold_on_its_context(loop):
    """The server closes first, the client closes in reply, and the loop stops before the
    client's connection_lost has run (the application protocol, which keeps its transport,
    is then still referenced by that pending call). Nothing of the connection may keep the
    client's SSL context alive: on asyncio it is freed at once."""
    events = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            transport.write(b"hello")

        def data_received(self, data):
            self.transport.close()

    class Client(asyncio.Protocol):
        def __init__(self, got_data, got_eof):
            self.got_data, self.got_eof = got_data, got_eof

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.got_data.set_result(data)

        def eof_received(self):
            self.got_eof.set_result(True)

        def connection_lost(self, exc):
            events.append("lost")

    async def main(context):
        server = await loop.create_server(Server, "127.0.0.1", 0, ssl=tls.server_context())
        got_data, got_eof = loop.create_future(), loop.create_future()
        transport, _ = await loop.create_connection(
            lambda: Client(got_data, got_eof),
            *net.address_of(server),
            ssl=context,
            server_hostname=tls.HOSTNAME,
        )
        assert await got_data == b"hello"
        transport.write(b"bye")
        await got_eof
        transport.close()
        server.close()

    context = tls.client_context()
    released = weakref.ref(context)
    loop.run_until_complete(main(context))
    del context
    assert released() is None
    loop.run_until_complete(asyncio.sleep(0.1))  # lets the connection finish closing
    assert events == ["lost"]


def test_changes_between_messages_take_effect(loop, run):
    """The TLS transport follows every change its protocol's state goes through between
    messages: a new protocol, paused reading, new write buffer limits. (ferroloop reads
    that state natively and keeps it while it is unchanged; each change must be seen.)"""

    async def main():
        server = await _tls_echo_server(loop, "tcp4", None)
        transport, first = await _tls_client(loop, server)
        sent = 0
        for _ in range(20):  # a steady stream first
            transport.write(b"a" * 100)
            sent += 100
            await first.wait_bytes(sent)

        second = net.RecordingProtocol(loop)
        transport.set_protocol(second)
        transport.write(b"b" * 100)
        await second.wait_bytes(100)

        transport.pause_reading()
        transport.write(b"c" * 100)
        await asyncio.sleep(0.2)
        held = len(second.data)
        transport.resume_reading()
        await second.wait_bytes(200)

        # A high-water mark of 0 pauses at once; raising it again resumes
        # (3.11's sslproto; 3.10's passes the limits to the socket transport).
        second.transport = transport
        transport.set_write_buffer_limits(high=0)
        paused = list(second.events)
        transport.set_write_buffer_limits(high=64 * 1024)
        transport.write(b"d" * 100)
        await second.wait_bytes(300)
        after = second.events[len(paused) :]
        transport.close()
        await _close(server)
        return bytes(first.data), held, bytes(second.data), paused[-1], after

    first, held, second, paused, after = run(main())
    assert first == b"a" * 2000
    assert held == 100
    assert second == b"b" * 100 + b"c" * 100 + b"d" * 100
    if PY311:
        assert paused == "pause_writing"
        assert after == ["resume_writing", "data"]


_WATCHERS_TAKEN = """
import asyncio, sys
sys.path.insert(0, sys.argv[2])
import _testcapi
from support import loops, net, tls

# Take every dict watcher slot first.
taken = 0
while True:
    try:
        _testcapi.add_dict_watcher(0)
    except Exception:
        break
    taken += 1

async def main(loop):
    server = await net.start_server(loop, "tcp4", net.EchoProtocol, None, ssl=tls.server_context())
    transport, first = await net.connect(
        loop, "tcp4", lambda: net.RecordingProtocol(loop), net.address_of(server),
        ssl=tls.client_context(),
    )
    for i in range(1, 11):
        transport.write(b"a" * 100)
        await first.wait_bytes(100 * i)
    second = net.RecordingProtocol(loop)
    transport.set_protocol(second)
    transport.write(b"b" * 100)
    await second.wait_bytes(100)
    transport.close()
    server.close()
    await server.wait_closed()
    return bytes(first.data) + bytes(second.data)

loop = loops.new_loop(sys.argv[1])
data = loop.run_until_complete(main(loop))
loop.close()
assert data == b"a" * 1000 + b"b" * 100, len(data)
print("ok", taken)
"""


@pytest.mark.skipif(sys.version_info < (3, 12), reason="dict watchers are new in 3.12")
def test_every_dict_watcher_slot_taken(loop_kind, tmp_path):
    """With no dict watcher left for ferroloop's TLS pump (3.12+), it reads the
    protocol's attributes afresh every time, and TLS works as before."""
    pytest.importorskip("_testcapi")
    tests = str(pathlib.Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", _WATCHERS_TAKEN, loop_kind, tests],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "ok"
    assert int(proc.stdout.split()[1]) > 0


@pytest.mark.ferroloop_only
def test_python_code_is_never_lent_the_loops_memory(loop, run, monkeypatch):
    """A memoryview of ferroloop's read buffers goes only to the ``_ssl`` module's C methods:
    a slice of it kept by Python code would outlive the view and see the memory reused.
    Python-level BIOs and SSL objects get ``bytes`` (or no buffer) instead. (asyncio hands its
    BIO a slice of its own bytearray, whose contents the next read changes.)"""
    kept: list[tuple[object, bytes]] = []
    buffers: list[object] = []

    class KeepingBIO:
        """A Python object in front of an ``ssl.MemoryBIO`` (not subclassable)."""

        def __init__(self):
            self.bio = ssl.MemoryBIO()

        def write(self, data):
            kept.append((data, bytes(data)))
            return self.bio.write(data)

        def __getattr__(self, name):
            return getattr(self.bio, name)

    class KeepingSSLObject(ssl.SSLObject):
        @classmethod
        def _create(cls, incoming, outgoing, *args, **kwargs):
            return super()._create(incoming.bio, outgoing.bio, *args, **kwargs)

        def read(self, len=1024, buffer=None):
            buffers.append(buffer)
            return super().read(len, buffer)

    class SslWithKeepingBIO:
        MemoryBIO = KeepingBIO

        def __getattr__(self, name):
            return getattr(ssl, name)

    monkeypatch.setattr(asyncio.sslproto, "ssl", SslWithKeepingBIO())
    context, server_context = tls.client_context(), tls.server_context()
    context.sslobject_class = server_context.sslobject_class = KeepingSSLObject

    async def main():
        server = await _tls_echo_server(loop, "tcp4", None, server_context)
        transport, proto = await _tls_client(loop, server, context)
        data = net.payload(200 * 1024)
        transport.write(data)
        got = await proto.wait_bytes(len(data))
        transport.close()
        await proto.lost
        await _close(server)
        return got == data

    assert run(main())
    assert kept and buffers
    assert {type(data) for data, _ in kept} == {bytes}
    assert all(bytes(data) == copy for data, copy in kept)
    assert not any(isinstance(b, memoryview) for b in buffers)
