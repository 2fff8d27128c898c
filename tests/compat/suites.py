"""The suites `make compat` runs: pinned sdists from PyPI, how each one chooses its loop.

A suite runs pytest once per *run*; each run says which loop it judges and how the tests pick
it (the uvloop shim first on sys.path, a pytest option of the suite, the plugin's policy), and
which tests it keeps. ``family`` maps a recorded test to the loop it ran on and to the key
under which it is compared across loops (e.g. uvloop's ``Test_UV_TCP`` and ``Test_AIO_TCP``
twins compare under their shared base class).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Run:
    loop: str  # asyncio, uvloop or ferroloop: what the plugin checks
    shim: bool = False  # put tests/compat/shims first on sys.path
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    # Results from this run that count for the loop(s): family(record) -> (loop, key) or None.
    family: Callable[[dict], tuple[str, str] | None] | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    package: str  # the sdist, pinned
    version: str
    tests: tuple[str, ...]  # paths copied from the sdist into the run directory
    deps: tuple[str, ...]  # pip requirements of the test venv (pinned where it matters)
    runs: dict[str, Run]
    args: tuple[str, ...] = ()
    paths: tuple[str, ...] = ("tests",)  # what pytest collects
    requirements: tuple[str, ...] = ()  # requirement files inside the sdist
    timeout: float = 1800  # seconds for one pytest process
    services: tuple[str, ...] = ()
    # Tests that need "localhost" to resolve to ::1, left out (on every loop) where it does not.
    ipv6_localhost: str = ""
    note: str = ""


def _uvloop_family(loop_alt: str) -> Callable[[dict], tuple[str, str] | None]:
    """uvloop's tests: AIOTestCase classes run asyncio, the others uvloop (or its shim)."""

    def family(rec: dict) -> tuple[str, str] | None:
        file, _, rest = rec["id"].partition("::")
        method = rest.split("::")[-1]
        key = f"{file}::{rec['pair'] or rest.split('::')[0]}::{method}"
        return ("asyncio" if rec["impl"] == "asyncio" else loop_alt), key

    return family


def _param_family(
    ids: dict[str, str], first: bool = False
) -> Callable[[dict], tuple[str, str] | None]:
    """Suites parametrized by loop: the param id says the loop; other tests are not counted.

    The loop's id is the first part of the test's id that names one (the first part only,
    with ``first``: anyio's other params may name backends too)."""
    names = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
    prefix = "" if first else r"(?:[^\]]*?-)?"
    pattern = re.compile(r"\[" + prefix + "(" + names + r")(?:-[^\]]*)?\]$")

    def family(rec: dict) -> tuple[str, str] | None:
        m = pattern.search(rec["id"])
        if m is None:
            return None
        key = rec["id"][: m.start(1)] + "LOOP" + rec["id"][m.end(1) :]
        return ids[m.group(1)], key

    return family


_UVLOOP_DROP = r"test_sourcecode\.py"  # flake8/mypy over uvloop's own source
# Pauses reading, never resumes, and waits for connection_lost: only uvloop's dropping of
# the data a raw EOF leaves ends it; asyncio's SSLProtocol (CPython's test_ssl) waits.
_UVLOOP_WAITS_ON_ITSELF = r"::Test_UV_TCPSSL::test_shutdown_timeout_handler_not_set$"
SUITES: dict[str, Suite] = {}


def _add(s: Suite) -> None:
    SUITES[s.name] = s


_add(
    Suite(
        name="uvloop",
        package="uvloop",
        version="0.23.0",
        tests=("tests",),
        deps=("uvloop==0.23.0", "aiohttp==3.14.5", "psutil", "pyOpenSSL==26.4.0"),
        runs={
            # The real uvloop: Test_AIO_* on asyncio, Test_UV_* (and uvloop-only classes) on uvloop.
            "uvloop": Run(
                loop="uvloop",
                env={"COMPAT_DROP": _UVLOOP_DROP},
                family=_uvloop_family("uvloop"),
            ),
            # The shim: the same Test_UV_* classes on ferroloop; Test_AIO_* are not rerun.
            "ferroloop": Run(
                loop="ferroloop",
                shim=True,
                env={
                    "COMPAT_DROP": _UVLOOP_DROP,
                    "COMPAT_DROP_IMPL": "asyncio",
                    "COMPAT_SHORT": _UVLOOP_WAITS_ON_ITSELF,
                },
                family=lambda rec: (
                    None if rec["impl"] == "asyncio" else _uvloop_family("ferroloop")(rec)
                ),
            ),
        },
        note="Test_AIO_* judge asyncio, Test_UV_* judge uvloop (real) or ferroloop (shim); "
        "tests compare by their shared base class",
    )
)

_ANYIO_IDS = {"asyncio": "asyncio", "asyncio+uvloop": "uvloop"}
_add(
    Suite(
        name="anyio",
        package="anyio",
        version="4.16.0",
        tests=("tests", "pyproject.toml"),
        deps=(
            "anyio==4.16.0",
            "uvloop==0.23.0",
            "blockbuster>=1.5.29",
            "coverage[toml]>=7",
            "hypothesis>=4.18.2",
            "psutil>=5.9",
            "pytest-mock>=3.14",
            "trustme>=1.0.0",
            "truststore>=0.9.1",
        ),
        args=("-m", "not network"),
        ipv6_localhost=r"\[[^\]]*\bipv6\b",
        runs={
            # Without the shim: the "asyncio" and "asyncio+uvloop" params are asyncio and uvloop.
            "uvloop": Run(
                loop="uvloop",
                env={"COMPAT_KEEP": r"\[asyncio(?:\+uvloop)?(?:-[^\]]*)?\]$"},
                family=_param_family(_ANYIO_IDS, first=True),
            ),
            # With it, "asyncio+uvloop" (loop_factory=uvloop.new_event_loop) is ferroloop.
            "ferroloop": Run(
                loop="ferroloop",
                shim=True,
                env={"COMPAT_KEEP": r"\[asyncio\+uvloop(?:-[^\]]*)?\]$"},
                family=_param_family({"asyncio+uvloop": "ferroloop"}, first=True),
            ),
        },
        note="anyio_backend params: 'asyncio' judges asyncio, 'asyncio+uvloop' "
        "(loop_factory=uvloop.new_event_loop) judges uvloop, or ferroloop with the shim",
    )
)

_AIOHTTP_PARAM = r"\[(?:[^\]]*?-)?{}(?:-[^\]]*)?\]$"
_add(
    Suite(
        name="aiohttp",
        package="aiohttp",
        version="3.14.5",
        tests=("tests", "pytest.ini"),
        deps=("aiohttp==3.14.5",),
        requirements=("requirements/test.txt",),
        # The modules that drive the loop (servers, clients, streams, sendfile, websockets);
        # the parser and payload unit tests take a loop parameter but little of the loop, and
        # would triple the time.
        paths=tuple(
            f"tests/test_{m}.py"
            for m in (
                "client_functional",
                "web_functional",
                "web_sendfile_functional",
                "client_ws_functional",
                "web_websocket_functional",
                "web_server",
                "run_app",
                "connector",
                "client_session",
                "web_runner",
                "streams",
                "flowcontrol_streams",
                "proxy_functional",
                "client_proto",
                "web_protocol",
                "resolver",
                "loop",
            )
        ),
        # pytest.ini's addopts want xdist and coverage; its markers and warnings filters stay.
        # The benchmarks (pytest-codspeed) are left out for time.
        args=(
            "-o",
            "addopts=",
            "-m",
            "not dev_mode and not autobahn and not internal",
            "--ignore-glob=tests/test_benchmarks_*",
        ),
        timeout=3600,
        runs={
            # aiohttp's pytest plugin parametrizes `loop` by --aiohttp-loop: pyloop is asyncio,
            # uvloop is uvloop.new_event_loop (the real one here; the shim's in the next run).
            "uvloop": Run(
                loop="uvloop",
                args=("--aiohttp-loop=pyloop,uvloop",),
                env={"COMPAT_KEEP": _AIOHTTP_PARAM.format("(?:pyloop|uvloop)")},
                family=_param_family({"pyloop": "asyncio", "uvloop": "uvloop"}),
            ),
            "ferroloop": Run(
                loop="ferroloop",
                shim=True,
                args=("--aiohttp-loop=uvloop",),
                env={"COMPAT_KEEP": _AIOHTTP_PARAM.format("uvloop")},
                family=_param_family({"uvloop": "ferroloop"}),
            ),
        },
        note="tests parametrized by aiohttp's --aiohttp-loop: pyloop judges asyncio, uvloop "
        "judges uvloop, or ferroloop with the shim; tests that take no loop are not counted",
    )
)


def _whole(loop: str) -> Run:
    """A run of the whole suite on one loop, chosen by the event loop policy."""
    return Run(
        loop=loop,
        shim=loop == "ferroloop",
        env={"COMPAT_POLICY": "1"} if loop != "asyncio" else {},
        family=lambda rec: (loop, rec["id"]),
    )


_add(
    Suite(
        name="uvicorn",
        package="uvicorn",
        version="0.54.0",
        tests=("tests", "pyproject.toml"),
        deps=(
            "uvicorn[standard]==0.54.0",
            "uvloop==0.23.0",
            "anyio==4.16.0",
            "httpx2",
            "pytest-mock==3.15.1",
            "trustme==1.2.1",
            "cryptography>=44.0.3",
            "a2wsgi==1.10.10",
            "wsproto==1.3.2",
            "websockets",
            "zttp==0.0.35",
        ),
        # pyproject's addopts want 8 xdist workers; the benchmarks need codspeed.
        args=("-o", "addopts=-rxXs --strict-markers", "--ignore=tests/benchmarks"),
        runs={loop: _whole(loop) for loop in ("asyncio", "uvloop", "ferroloop")},
        note="anyio-marked tests on the default policy's loop: asyncio's, uvloop's, or "
        "ferroloop's through the shim's policy (uvicorn's loop='auto' then picks the shim too)",
    )
)

_add(
    Suite(
        name="redis",
        package="redis",
        version="8.1.0",
        tests=("tests", "pyproject.toml"),
        deps=("redis==8.1.0",),
        requirements=("dev_requirements.txt",),
        # The asyncio client's tests, against one standalone redis-server (services.py);
        # cluster, sentinel, module, TLS and replica tests need servers not started here.
        paths=("tests/test_asyncio",),
        args=(
            "-o",
            "addopts=",
            "-m",
            "not onlycluster and not redismod and not ssl and not replica",
            "--ignore=tests/test_asyncio/test_multidb",
            "--ignore=tests/test_asyncio/test_scenario",
        ),
        services=("redis",),
        runs={loop: _whole(loop) for loop in ("asyncio", "uvloop", "ferroloop")},
        note="redis-py's asyncio tests (pytest-asyncio) on the default policy's loop, against "
        "redis-server from Debian's package on 127.0.0.1",
    )
)

_add(
    Suite(
        name="asyncpg",
        package="asyncpg",
        version="0.32.0",
        tests=("tests", "pyproject.toml"),
        deps=("asyncpg==0.32.0", "uvloop==0.23.0", "distro~=1.9.0"),
        # test__sourcecode.py runs flake8/mypy over asyncpg's source.
        args=(
            "-o",
            "addopts=--strict-markers --import-mode=importlib",
            "--ignore=tests/test__sourcecode.py",
        ),
        services=("postgres",),
        runs={
            # asyncpg's test base makes uvloop.new_event_loop() loops when USE_UVLOOP is set.
            "asyncio": Run(loop="asyncio", family=lambda rec: ("asyncio", rec["id"])),
            "uvloop": Run(
                loop="uvloop", env={"USE_UVLOOP": "1"}, family=lambda rec: ("uvloop", rec["id"])
            ),
            "ferroloop": Run(
                loop="ferroloop",
                shim=True,
                env={"USE_UVLOOP": "1"},
                family=lambda rec: ("ferroloop", rec["id"]),
            ),
        },
        note="asyncpg's unittest suite (its test base picks uvloop.new_event_loop with "
        "USE_UVLOOP=1) against a PostgreSQL from Debian's package on 127.0.0.1",
    )
)
