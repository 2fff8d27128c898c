"""``ferroloop.Loop``: the native core plus asyncio's once-per-call orchestration.

The native ``LoopCore`` implements everything that runs per callback or per
event: the ready queue, timers, epoll, ``call_soon``/``call_later``/
``call_at``/``call_soon_threadsafe``, readers and writers. ``Loop`` also derives
from ``asyncio.BaseEventLoop`` so the parts of the API that run once per call
(``run_until_complete``, tasks and their factory, the exception handler,
executors, DNS, async generator hooks, debug settings) are the interpreter's
own code with the interpreter's own behaviour. The native methods come first
in the MRO and replace their Python counterparts.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from asyncio import base_events, events
from asyncio.log import logger
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _ferroloop
from ._observe import ObservabilityAPI
from ._signals import SignalHandlers
from ._sockets import SocketAPI
from ._subprocess import SubprocessAPI

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike
    from typing_extensions import TypeVarTuple, Unpack

    _Ts = TypeVarTuple("_Ts")

# Every loop not yet collected, for the fork hook below.
_loops: weakref.WeakSet[Loop] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A child shares the parent's epoll instance and wake-up descriptors (the
    # same kernel objects, not copies): its copies of the loops must stop
    # using them before anything in the child can, so that nothing the child
    # does reaches the parent's loops. One loop's failure (no descriptors
    # left, say) must not leave the others on the parent's objects.
    failed: BaseException | None = None
    for loop in list(_loops):
        try:
            loop._leave_parent_process()
        except Exception as exc:
            failed = failed or exc
    if failed is not None:
        raise failed


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Native:
    """An attribute of asyncio's pure-Python loop whose job ferroloop's native core
    does (the ready queue, the timer heap, the selector, one iteration). Reading it
    raises ``AttributeError`` saying so, and ``BaseEventLoop.__init__``'s assignment is
    dropped: tools that patch those internals (nest_asyncio) must fail at once, not run
    on a queue nothing reads."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        raise AttributeError(
            f"ferroloop.Loop has no {self.name!r}: its ready queue, timers, poller and "
            "iterations are native, so code that patches asyncio's BaseEventLoop "
            "internals (such as nest_asyncio) cannot work with it"
        )

    def __set__(self, obj: Any, value: Any) -> None:
        pass


class _NotPatchable:
    """``nest_asyncio.apply(loop)`` looks for this first: it gets uvloop's answer (a
    ``ValueError`` before any change to the loop's class) instead of replacing
    ``run_forever`` with code that drives the ``_Native`` attributes."""

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        raise ValueError(
            "Can't patch loop of type ferroloop.Loop: nest_asyncio replaces "
            "BaseEventLoop._run_once, which ferroloop's native loop does not use "
            "(its loops are not reentrant, as uvloop's are not)"
        )


# The native call_soon/call_later/call_at/call_soon_threadsafe return ferroloop's own
# Handle and TimerHandle, which have asyncio's handle API but are not subclasses of
# asyncio.Handle: the stubs say so, and mypy reports the difference from
# BaseEventLoop's declarations here (as it does create_task's eager_start).
class Loop(  # type: ignore[misc]
    _ferroloop.LoopCore,
    ObservabilityAPI,
    SignalHandlers,
    SocketAPI,
    SubprocessAPI,
    base_events.BaseEventLoop,
):
    """An asyncio event loop whose core is native code. Create one with
    :func:`ferroloop.new_event_loop`; it behaves as asyncio's default loop."""

    if TYPE_CHECKING:
        # BaseEventLoop's and the selector loop's private helpers, which the
        # stubs of the standard library leave out.
        def _check_closed(self) -> None: ...
        def _check_running(self) -> None: ...
        def _set_coroutine_origin_tracking(self, enabled: bool) -> None: ...
        def _asyncgen_firstiter_hook(self, agen: Any) -> None: ...
        def _asyncgen_finalizer_hook(self, agen: Any) -> None: ...
        def _ensure_fd_no_transport(self, fd: Any) -> None: ...

    _ready = _Native()
    _scheduled = _Native()
    _selector = _Native()
    _run_once = _Native()
    _nest_patched = _NotPatchable()

    def __init__(self) -> None:
        base_events.BaseEventLoop.__init__(self)
        SignalHandlers.__init__(self)
        self._init_sockets()
        self._init_subprocess()
        self._init_observe()
        _loops.add(self)

    def _leave_parent_process(self) -> None:
        """In a forked child: keep this copy of the loop off the parent's kernel
        objects. Registrations, signal wake-ups and child processes made before
        the fork stay the parent's; queued callbacks and timers stay here."""
        self._leave_parent()
        self._forget_parent_signals()
        self._forget_parent_children()
        # Its threads were not forked: the child makes its own when asked.
        self._default_executor = None

    def run_forever(self) -> None:
        """Run until :meth:`stop` is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._run_forever_core()
        finally:
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def close(self) -> None:
        """Close the loop: drop pending callbacks, release its file descriptors
        and shut down the default executor without waiting for it."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self._debug:
            logger.debug("Close %r", self)
        self._close_observe()
        self._close_signal_handlers()
        self._close_subprocess()
        self._close_accept()
        self._close_core()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    def add_reader(
        self,
        fd: FileDescriptorLike,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
    ) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is readable."""
        self._ensure_fd_no_transport(fd)
        self._add_reader(fd, callback, *args)

    def remove_reader(self, fd: FileDescriptorLike) -> bool:
        """Stop watching ``fd`` for reading; ``True`` if it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_reader(fd)

    def add_writer(
        self,
        fd: FileDescriptorLike,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
    ) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is writable."""
        self._ensure_fd_no_transport(fd)
        self._add_writer(fd, callback, *args)

    def remove_writer(self, fd: FileDescriptorLike) -> bool:
        """Stop watching ``fd`` for writing; ``True`` if it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_writer(fd)
