"""Unix signal handlers: ``add_signal_handler`` / ``remove_signal_handler``.

Signals reach the loop through ``signal.set_wakeup_fd``: the C-level handler
writes the signal number to a socket the loop watches, so a signal wakes a
sleeping loop at once; the registered callback then runs as an ordinary loop
callback in the loop's thread. The handler is installed before
``add_signal_handler`` returns.
"""

from __future__ import annotations

import errno
import signal
import socket
from asyncio import coroutines
from asyncio.log import logger
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    _Ts = TypeVarTuple("_Ts")


def _noop_handler(signum: int, frame: Any) -> None:
    """Installed with ``signal.signal``; the real work happens on the loop."""


class SignalHandlers:
    """Mixin for ``ferroloop.Loop``: the signal-handler half of its API."""

    if TYPE_CHECKING:
        # Provided by the loop this is mixed into (LoopCore, BaseEventLoop).
        def _add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> object: ...
        def _remove_reader(self, fd: int) -> bool: ...
        def _make_handle(self, callback: Callable[..., object], *args: Any) -> Any: ...
        def _add_handle(self, handle: Any) -> None: ...
        def _check_closed(self) -> None: ...

    def __init__(self) -> None:
        self._signal_handlers: dict[int, Any] = {}
        self._signal_socks: tuple[socket.socket, socket.socket] | None = None

    def _check_signal(self, sig: Any) -> None:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def _signal_wakeup_sock(self) -> socket.socket:
        """The write end of the socket pair the loop watches, made on first use."""
        if self._signal_socks is None:
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            self._signal_socks = (rsock, wsock)
            self._add_reader(rsock.fileno(), self._read_signals)
        return self._signal_socks[1]

    def _read_signals(self) -> None:
        assert self._signal_socks is not None
        while True:
            try:
                data = self._signal_socks[0].recv(4096)
            except InterruptedError:
                continue
            except BlockingIOError:
                return
            if not data:
                return
            for signum in data:
                if signum:
                    self._dispatch_signal(signum)

    def _dispatch_signal(self, signum: int) -> None:
        handle = self._signal_handlers.get(signum)
        if handle is None:
            return
        if handle.cancelled():
            self.remove_signal_handler(signum)
        else:
            self._add_handle(handle)

    def add_signal_handler(
        self, sig: int, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts]
    ) -> None:
        """Run ``callback(*args)`` in the loop whenever signal ``sig`` arrives."""
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        try:
            # Raises ValueError outside the main thread, as asyncio reports.
            signal.set_wakeup_fd(self._signal_wakeup_sock().fileno())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc)) from None
        self._signal_handlers[sig] = self._make_handle(callback, *args)
        try:
            signal.signal(sig, _noop_handler)
            # Let system calls restart rather than fail with EINTR.
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                self._clear_wakeup_fd()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove the handler for ``sig``; ``True`` if there was one."""
        self._check_signal(sig)
        if self._signal_handlers.pop(sig, None) is None:
            return False
        default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, default)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        if not self._signal_handlers:
            self._clear_wakeup_fd()
        return True

    def _clear_wakeup_fd(self) -> None:
        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError) as exc:
            logger.info("set_wakeup_fd(-1) failed: %s", exc)

    def _forget_parent_signals(self) -> None:
        """In a forked child: the socket pair is shared with the parent, so the
        child's signals must not be written to it (the parent would run their
        handlers) nor its reads take the parent's. The handlers stay on record
        but stop firing, as on asyncio 3.12+ (whose fork hook resets the wakeup
        fd); a later ``add_signal_handler`` makes a pair of the child's own."""
        if self._signal_socks is None:
            return
        rsock, wsock = self._signal_socks
        self._signal_socks = None
        try:
            old = signal.set_wakeup_fd(-1)
            if old not in (-1, wsock.fileno()):
                signal.set_wakeup_fd(old)
        except (ValueError, OSError):
            pass
        rsock.close()
        wsock.close()

    def _close_signal_handlers(self) -> None:
        for sig in list(self._signal_handlers):
            self.remove_signal_handler(sig)
        if self._signal_socks is not None:
            rsock, wsock = self._signal_socks
            self._signal_socks = None
            self._remove_reader(rsock.fileno())
            rsock.close()
            wsock.close()
