"""``ferroloop.otel``: a loop's stats as OpenTelemetry metrics, read back with the
SDK's in-memory reader. ferroloop's own (asyncio has no stats to publish)."""

from __future__ import annotations

import asyncio
import textwrap

import pytest
from support import loops

pytestmark = [pytest.mark.ferroloop_only, pytest.mark.timeout(60)]

sdk_metrics = pytest.importorskip(
    "opentelemetry.sdk.metrics",
    reason="opentelemetry-sdk is pinned in requirements-dev.txt; not installed here",
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402


def _collect(reader: InMemoryMetricReader) -> dict[str, list]:
    data = reader.get_metrics_data()
    points: dict[str, list] = {}
    if data is None:
        return points
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


@pytest.fixture
def reader():
    reader = InMemoryMetricReader()
    provider = sdk_metrics.MeterProvider(metric_readers=[reader])
    yield reader, provider
    provider.shutdown()


def test_publishes_counters_and_gauges(loop, run, reader) -> None:
    import ferroloop.otel

    reader, provider = reader
    instrumentation = ferroloop.otel.instrument(loop, provider, attributes={"loop": "main"})

    async def main() -> None:
        for _ in range(100):
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)

    run(main())
    stats = loop.stats()
    points = _collect(reader)
    names = {
        f"ferroloop.loop.{field}" for field, _, _ in ferroloop.otel.COUNTERS + ferroloop.otel.GAUGES
    }
    assert names <= set(points)
    (callbacks,) = points["ferroloop.loop.callbacks"]
    assert callbacks.value == stats.callbacks >= 100
    assert dict(callbacks.attributes) == {"loop": "main"}
    (fired,) = points["ferroloop.loop.timers_fired"]
    assert fired.value == stats.timers_fired >= 1
    (ready,) = points["ferroloop.loop.ready"]
    assert ready.value == 0
    (lag,) = points["ferroloop.loop.timer_lag.max"]
    assert lag.value == stats.timer_lag.max
    assert isinstance(points["ferroloop.loop.blocked_time"][0].value, float)

    instrumentation.stop()
    assert _collect(reader).get("ferroloop.loop.callbacks", []) == []


def test_closed_loop_reports_nothing(loop, reader) -> None:
    import ferroloop.otel

    reader, provider = reader
    ferroloop.otel.instrument(loop, provider)
    loop.close()
    assert _collect(reader).get("ferroloop.loop.callbacks", []) == []


def test_rejects_a_loop_without_stats(reader) -> None:
    import ferroloop.otel

    _, provider = reader
    with pytest.raises(TypeError, match="needs a ferroloop loop"):
        ferroloop.otel.instrument(object(), provider)


def test_clear_import_error_without_the_api(ferroloop_module) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None
        try:
            import ferroloop.otel
        except ImportError as exc:
            print(exc)
        """
    )
    child = loops.run_child(code)
    assert child.returncode == 0, child.stderr
    assert "pip install opentelemetry-api" in child.stdout
