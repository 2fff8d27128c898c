"""Four steps of asyncio's ``SSLProtocol`` taken as uvloop takes them.

The running Python's ``asyncio.sslproto.SSLProtocol`` (3.11 to 3.13, the
versions the native pump drives) is ferroloop's TLS layer. Where uvloop's TLS
layer behaves better in a way CPython's own suite does not contradict, the
protocol gets an instance attribute that runs the class's step around one
change; the class and its state machine stay the interpreter's:

- ``_set_app_protocol``: an application protocol that is not an
  ``asyncio.Protocol``, has ``get_buffer`` and ``buffer_updated`` and no
  ``data_received`` receives decrypted data into its buffer, the rule the
  socket transport applies (``src/transport/protocol_kind.rs``). asyncio
  would call the missing ``data_received``.
- ``_on_handshake_complete``: the first read after the handshake is a loop
  callback, so the code awaiting the handshake (``start_tls()``'s caller,
  ``create_connection()``'s) runs before the first ``data_received``; asyncio
  reads at once, and a protocol answering in ``data_received`` still holds
  the transport it had before ``start_tls()`` and answers in plain text.
- ``_do_flush``: after the application closed its transport, data still
  arriving is read and discarded, as a closed socket transport delivers
  nothing more; asyncio passes it to ``data_received`` after ``close()``.
  (When the peer's EOF starts the flush and the application has not closed,
  its data is delivered, as CPython's ``test_ssl`` requires.)
- ``_do_shutdown``: once the connection is closing on this side, application
  data the peer sends before its close_notify is read and discarded before
  ``unwrap()``; asyncio leaves it in the ``SSLObject``, whose shutdown then
  fails with ``APPLICATION_DATA_AFTER_CLOSE_NOTIFY`` (bpo-39951), so a
  ``close()`` of a connection the peer was still writing to ended in
  ``connection_lost(SSLError)`` and ``eof_received()`` was never called.

Instance attributes: set before the native pump first reads the protocol's
``__dict__``, or watched by it (``src/py/dict_stamp.rs``). Each holds a weak
reference: the protocol must not keep itself (and its SSL context) alive.
"""

from __future__ import annotations

import functools
import ssl
import sys
import weakref
from asyncio import protocols, sslproto
from typing import Any

# The versions whose SSLProtocol steps were read for this module.
_STEPS_KNOWN = (3, 11) <= sys.version_info[:2] < (3, 14)

# The class whose steps these run (typeshed lists few of its private methods).
_SSLProtocol: Any = sslproto.SSLProtocol

# The most one read takes from the SSLObject while discarding.
_DISCARD_CHUNK = 64 * 1024

_AGAIN = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


def reads_into_buffer(protocol: Any) -> bool:
    """True when decrypted data goes through ``get_buffer``/``buffer_updated``."""
    if isinstance(protocol, protocols.BufferedProtocol):
        return True
    if isinstance(protocol, protocols.Protocol):
        return False
    return (
        hasattr(protocol, "get_buffer")
        and hasattr(protocol, "buffer_updated")
        and not hasattr(protocol, "data_received")
    )


def _set_app_protocol(ref: Any, app_protocol: Any) -> None:
    ssl_protocol = ref()
    if ssl_protocol is None:
        return
    _SSLProtocol._set_app_protocol(ssl_protocol, app_protocol)
    if not ssl_protocol._app_protocol_is_buffer and reads_into_buffer(app_protocol):
        ssl_protocol._app_protocol_get_buffer = app_protocol.get_buffer
        ssl_protocol._app_protocol_buffer_updated = app_protocol.buffer_updated
        ssl_protocol._app_protocol_is_buffer = True


def _read_later(ref: Any) -> None:
    ssl_protocol = ref()
    if ssl_protocol is None:
        return
    if ssl_protocol._state is not sslproto.SSLProtocolState.WRAPPED:
        # A close() in connection_made() started the flush, whose read (and
        # write of the backlog) comes before the shutdown: not deferred.
        _SSLProtocol._do_read(ssl_protocol)
        return
    # _do_read returns at once unless the state is WRAPPED or FLUSHING.
    ssl_protocol._loop.call_soon(_SSLProtocol._do_read, ssl_protocol)


def _on_handshake_complete(ref: Any, handshake_exc: Any) -> None:
    ssl_protocol = ref()
    if ssl_protocol is None:
        return
    # The class's step ends with self._do_read(), after waking the waiter:
    # that one call is deferred to the next loop iteration.
    ssl_protocol._do_read = functools.partial(_read_later, ref)
    try:
        _SSLProtocol._on_handshake_complete(ssl_protocol, handshake_exc)
    finally:
        del ssl_protocol._do_read


def _discard_incoming(ssl_protocol: Any) -> BaseException | None:
    """Read application data out of the SSLObject until it has none decrypted;
    an SSL error other than "no more yet" or the peer's close_notify is
    returned, for the shutdown to fail with it as asyncio's unwrap() would."""
    sslobj = ssl_protocol._sslobj
    try:
        while sslobj.read(_DISCARD_CHUNK):
            pass
    except _AGAIN:
        pass
    except ssl.SSLZeroReturnError:
        pass
    except ssl.SSLError as exc:
        return exc
    return None


def _discard_read(ref: Any) -> None:
    ssl_protocol = ref()
    if ssl_protocol is None:
        return
    exc = _discard_incoming(ssl_protocol)
    if exc is not None:
        raise exc  # to the class's _do_read, which fails the connection with it


# The parts of the class's _do_read that hand data to the application.
_DELIVERY = ("_do_read__copied", "_do_read__buffered")


def _do_flush(ref: Any) -> None:
    ssl_protocol = ref()
    if ssl_protocol is None:
        return
    app_transport = ssl_protocol._app_transport
    if app_transport is None or not app_transport._closed:
        _SSLProtocol._do_flush(ssl_protocol)
        return
    # The class's step reads (its _do_read also writes the backlog out), then
    # shuts down: the read discards instead of delivering.
    discard = functools.partial(_discard_read, ref)
    for name in _DELIVERY:
        setattr(ssl_protocol, name, discard)
    try:
        _SSLProtocol._do_flush(ssl_protocol)
    finally:
        for name in _DELIVERY:
            delattr(ssl_protocol, name)


def _do_shutdown(ref: Any) -> None:
    ssl_protocol = ref()
    if ssl_protocol is None:
        return
    if not ssl_protocol._eof_received:
        exc = _discard_incoming(ssl_protocol)
        if exc is not None:
            ssl_protocol._on_shutdown_complete(exc)
            return
    _SSLProtocol._do_shutdown(ssl_protocol)


_STEPS = (
    ("_set_app_protocol", _set_app_protocol),
    ("_on_handshake_complete", _on_handshake_complete),
    ("_do_flush", _do_flush),
    ("_do_shutdown", _do_shutdown),
)


def install(ssl_protocol: sslproto.SSLProtocol) -> None:
    """Give ``ssl_protocol`` the four steps (once; before its ``__init__`` or
    after: ``__init__`` calls ``_set_app_protocol``, which is redone here)."""
    if not _STEPS_KNOWN or "_do_shutdown" in ssl_protocol.__dict__:
        return
    ref = weakref.ref(ssl_protocol)
    for name, step in _STEPS:
        setattr(ssl_protocol, name, functools.partial(step, ref))
    app_protocol = getattr(ssl_protocol, "_app_protocol", None)
    if app_protocol is not None:
        ssl_protocol._set_app_protocol(app_protocol)
