"""Run one of the interpreter's own ``test.test_asyncio`` modules and record each test's outcome.

    python tests/cpython/run_module.py test_tasks --loop ferroloop --json out.json

With ``--loop ferroloop`` every event loop the tests create through asyncio's public
entry points (policy, ``new_event_loop``, ``run``, ``Runner``, ``IsolatedAsyncioTestCase``,
``SelectorEventLoop``, ``EventLoop``, ``DefaultEventLoopPolicy``) is a ferroloop loop.
``test_utils.TestLoop`` and direct ``BaseEventLoop()`` instances are left alone: they unit-test
asyncio's own internals.

Meant to run in a fresh process per module (conformance.py does that); it patches asyncio
and the test support module globally.
"""

from __future__ import annotations

import argparse
import errno
import faulthandler
import ipaddress
import json
import signal
import socket
import sys
import time
import traceback
import unittest

PACKAGE = "test.test_asyncio"
# The worst outcome wins when a test reports more than one (e.g. fails, then its cleanup errors).
RANK = {"pass": 0, "expectedFailure": 1, "skip": 2, "unexpectedSuccess": 3, "fail": 4, "error": 5}

# Counts ferroloop loops made through the substituted entry points, so each test can say
# whether it ran on ferroloop at all (many run on TestLoop or a bare BaseEventLoop).
_loops_made = 0
_network_attempts: list[str] = []


# --- network guard -------------------------------------------------------------------------

_LOCAL_NAMES = {"", "localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _is_local(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False  # any other name would be resolved through DNS
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.is_loopback or addr.is_unspecified


def _is_local_or_numeric(host: object) -> bool:
    # Resolving a numeric address sends nothing; connecting to it is checked separately.
    if _is_local(host):
        return True
    try:
        ipaddress.ip_address(str(host).split("%")[0])
        return True
    except ValueError:
        return False


def _audit(event: str, args: tuple) -> None:
    """Refuse traffic that would leave the machine (only loopback is allowed here).

    Catches what goes through Python's socket module (asyncio's connects and every loop's
    getaddrinfo); a connect issued natively from Rust is not seen.
    """
    if event in ("socket.connect", "socket.sendto"):
        sock, address = args[0], args[1]
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            _network_attempts.append(f"{event} {address!r}")
            raise OSError(errno.ENETUNREACH, f"conformance runner: no network ({address!r})")
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex"):
        if not _is_local_or_numeric(args[0]):
            _network_attempts.append(f"{event} {args[0]!r}")
            raise socket.gaierror(socket.EAI_NONAME, f"conformance runner: no DNS ({args[0]!r})")


# --- ferroloop substitution ----------------------------------------------------------------


def substitute_ferroloop() -> None:
    """Make asyncio's public loop entry points produce ferroloop loops."""
    import asyncio
    import asyncio.unix_events as unix_events

    import ferroloop  # an ImportError here must fail the run, never be skipped

    stdlib_policy = asyncio.DefaultEventLoopPolicy

    def new_event_loop(self):
        global _loops_made
        _loops_made += 1
        return super(policy_class, self).new_event_loop()

    # Mixing in the stdlib Unix policy keeps its child-watcher API (3.10-3.13): test_events'
    # setUp and test_utils.TestCase.close_loop call it, and without it every such test would
    # error. ferroloop's own methods come first in the MRO. If the two cannot be combined
    # (e.g. a native policy class), use ferroloop's policy alone.
    for bases in ((ferroloop.EventLoopPolicy, stdlib_policy), (ferroloop.EventLoopPolicy,)):
        try:
            policy_class = type(
                "DefaultEventLoopPolicy",
                bases,
                {"__module__": "asyncio.unix_events", "new_event_loop": new_event_loop},
            )
            break
        except TypeError:
            continue

    class _LoopClass(type):
        # Stands in for a loop class: calling it makes a ferroloop loop, and isinstance /
        # issubclass answer for ferroloop.Loop, so `assertIsInstance(loop,
        # asyncio.SelectorEventLoop)` holds. The selector argument is closed and ignored:
        # ferroloop polls with its own epoll.
        def __call__(cls, selector=None):
            global _loops_made
            if selector is not None:
                selector.close()
            _loops_made += 1
            return ferroloop.new_event_loop()

        def __instancecheck__(cls, obj):
            return isinstance(obj, ferroloop.Loop)

        def __subclasscheck__(cls, sub):
            return issubclass(sub, ferroloop.Loop)

    loop_class = _LoopClass("SelectorEventLoop", (), {"__module__": "asyncio.unix_events"})

    # `set_event_loop_policy(None)` (every module's tearDownModule, test_runners' tearDown)
    # makes the next get_event_loop_policy() call `asyncio.DefaultEventLoopPolicy()`, so
    # substituting that name is what makes the substitution survive a reset.
    for module in (asyncio, unix_events):
        module.DefaultEventLoopPolicy = policy_class
        module.SelectorEventLoop = loop_class
        if hasattr(module, "EventLoop"):  # 3.13+
            module.EventLoop = loop_class
    asyncio.set_event_loop_policy(policy_class())

    # test_utils.TestCase.close_loop reads the private `loop._default_executor`; for a loop
    # without it, shut the executor down through the public API instead of erroring in
    # every test's cleanup. Loops that have the attribute keep the original path exactly.
    from test.test_asyncio import utils as test_utils

    original_close_loop = test_utils.TestCase.close_loop

    def close_loop(loop):
        if not hasattr(loop, "_default_executor"):
            if not loop.is_closed():
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            # The rest (child-watcher thread joins) only needs a closed loop-like object.
            loop = _ClosedLoop()
        original_close_loop(loop)

    test_utils.TestCase.close_loop = staticmethod(close_loop)

    # Fail loudly if the substitution does not actually give ferroloop loops.
    made = _loops_made
    for loop in (asyncio.new_event_loop(), asyncio.SelectorEventLoop()):
        try:
            if not isinstance(loop, ferroloop.Loop):
                raise SystemExit(f"substitution failed: got {type(loop)!r}, not ferroloop.Loop")
        finally:
            loop.close()
    globals()["_loops_made"] = made


class _ClosedLoop:
    _default_executor = None

    def close(self) -> None:
        pass


# --- result recording ----------------------------------------------------------------------


def _summary(err) -> str:
    """The exception line of a failure, short enough to read in a table."""
    lines = traceback.format_exception_only(err[0], err[1])
    return lines[-1].strip()[:300] if lines else repr(err[1])[:300]


class Recorder(unittest.TestResult):
    """Keeps one outcome per test id and streams it as a JSON line as soon as it is known."""

    def __init__(self, stream, per_test_timeout: float):
        super().__init__()
        self.stream = stream
        self.per_test_timeout = per_test_timeout
        self.outcomes: dict[str, dict] = {}
        self._current: dict | None = None
        # Marks taken at the previous test's end, not at startTest: 3.10's
        # IsolatedAsyncioTestCase makes its loop before calling startTest.
        self._loops_mark, self._net_mark = _loops_made, 0

    def _emit(self, line: dict) -> None:
        if self.stream is not None:
            self.stream.write(json.dumps(line) + "\n")
            self.stream.flush()

    def _note(self, test, outcome: str, detail: str = "") -> None:
        if isinstance(test, unittest.case._SubTest):
            if outcome == "skip":
                return  # a skipped subtest leaves its test's outcome alone
            test = test.test_case
        tid = test.id()
        if self._current is not None and self._current["id"] == tid:
            rec = self._current
        else:
            # Module/class fixture errors (_ErrorHolder) come without startTest.
            rec = {"id": tid, "outcome": "pass", "detail": ""}
            self.outcomes[tid] = rec
            rec["outcome"], rec["detail"] = outcome, detail
            self._emit(rec)
            return
        if RANK[outcome] >= RANK[rec["outcome"]]:
            rec["outcome"], rec["detail"] = outcome, detail or rec["detail"]

    def startTest(self, test):
        super().startTest(test)
        self._emit({"start": test.id(), "at": time.time()})
        self._current = {"id": test.id(), "outcome": "pass", "detail": ""}
        self._t0 = time.monotonic()
        if self.per_test_timeout:
            # A hung test dumps every thread's stack and ends the process; the gate then
            # records it and resumes after it.
            faulthandler.dump_traceback_later(self.per_test_timeout, exit=True)

    def stopTest(self, test):
        faulthandler.cancel_dump_traceback_later()
        rec, self._current = self._current, None
        if rec is None:
            # 3.12.1 stops a test of a skipped class without starting it; its
            # skip has already been recorded by _note.
            self.outcomes.setdefault(test.id(), {"id": test.id(), "outcome": "skip", "detail": ""})
            super().stopTest(test)
            return
        rec["secs"] = round(time.monotonic() - self._t0, 3)
        rec["ferroloop"] = _loops_made > self._loops_mark
        if len(_network_attempts) > self._net_mark:
            rec["network"] = _network_attempts[self._net_mark :]
        self._loops_mark, self._net_mark = _loops_made, len(_network_attempts)
        self.outcomes[rec["id"]] = rec
        self._emit(rec)
        super().stopTest(test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._note(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._note(test, "fail", _summary(err))

    def addError(self, test, err):
        super().addError(test, err)
        self._note(test, "error", _summary(err))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._note(test, "skip", str(reason)[:300])

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._note(test, "expectedFailure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._note(test, "unexpectedSuccess")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._note(subtest, "fail" if failed else "error", _summary(err))


def _flatten(suite) -> list[unittest.TestCase]:
    out = []
    for item in suite:
        out.extend(_flatten(item) if isinstance(item, unittest.TestSuite) else [item])
    return out


def _read_ids(path: str) -> set[str]:
    with open(path) as f:
        return {line.strip() for line in f if line.strip()}


def main(argv: list[str] | None = None) -> int:
    # Launched in the background, a process inherits an ignored SIGINT and
    # CPython then installs no KeyboardInterrupt handler; the interrupt tests
    # (test_runners) need the interpreter's default.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("module", help="e.g. test_tasks or test.test_asyncio.test_tasks")
    ap.add_argument("--loop", choices=("asyncio", "ferroloop"), required=True)
    ap.add_argument("--json", required=True, help="where to write the per-test outcomes")
    ap.add_argument("--stream", help="also append one JSON line per event here (for the gate)")
    ap.add_argument("--skip-file", help="file of test ids not to run (one a line)")
    ap.add_argument("--only-file", help="file of the only test ids to run (one a line)")
    ap.add_argument("--per-test-timeout", type=float, default=0, help="seconds; 0 = none")
    args = ap.parse_args(argv)
    # A bare name is a test.test_asyncio module; a dotted one is taken as is.
    name = args.module if "." in args.module else f"{PACKAGE}.{args.module}"

    sys.addaudithook(_audit)
    from test import support

    # As regrtest sets them: quiet, and no optional resources (notably no 'network').
    support.verbose = 0
    support.use_resources = []

    if args.loop == "ferroloop":
        substitute_ferroloop()

    suite = unittest.defaultTestLoader.loadTestsFromName(name)
    tests = _flatten(suite)
    # A module that fails to import shows up as a single _FailedTest: let it run and error.
    if args.only_file:
        only = _read_ids(args.only_file)
        tests = [t for t in tests if t.id() in only]
    if args.skip_file:
        skip = _read_ids(args.skip_file)
        tests = [t for t in tests if t.id() not in skip]
    collected = [t.id() for t in tests]

    stream = open(args.stream, "a") if args.stream else None
    result = Recorder(stream, args.per_test_timeout)
    result._emit({"collected": collected})
    t0 = time.monotonic()
    # A flat suite still runs setUpModule/setUpClass/tearDown* at the class and module
    # boundaries, as unittest tracks the previous test's class.
    unittest.TestSuite(tests).run(result)
    wall = time.monotonic() - t0
    for tid in collected:  # e.g. the tests of a class whose setUpClass failed
        if tid not in result.outcomes:
            rec = {"id": tid, "outcome": "error", "detail": "not run (fixture failed)"}
            result.outcomes[tid] = rec
            result._emit(rec)
    result._emit({"done": True, "wall": round(wall, 2)})

    counts = {k: 0 for k in RANK}
    for rec in result.outcomes.values():
        counts[rec["outcome"]] += 1
    out = {
        "module": name.rsplit(".", 1)[1],
        "loop": args.loop,
        "python": sys.version.split()[0],
        "wall": round(wall, 2),
        "counts": counts,
        "tests": result.outcomes,
    }
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    print(
        f"{out['module']} [{args.loop}, {out['python']}] {wall:.1f}s "
        + " ".join(f"{k}={v}" for k, v in counts.items() if v)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
