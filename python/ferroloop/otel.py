"""Publish a ferroloop loop's :meth:`~ferroloop.Loop.stats` as OpenTelemetry metrics.

Needs ``opentelemetry-api`` (install ``opentelemetry-sdk`` or another
implementation to export anything)::

    import ferroloop.otel
    ferroloop.otel.instrument(loop)            # the global meter provider
    ferroloop.otel.instrument(loop, meter_provider=provider)

Totals (iterations, callbacks, timers, bytes, seconds spent) are observable
counters; current values (ready-queue depth, readers, writers, transports,
servers) and the lag figures (last and max timer lateness and ready-queue wait,
seconds) are observable gauges. The SDK reads them when it collects, from its
own thread: a snapshot is a handful of integer reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Observation
except ImportError as exc:  # pragma: no cover - exercised without the package
    raise ImportError(
        "ferroloop.otel needs the OpenTelemetry API: pip install opentelemetry-api "
        "(and opentelemetry-sdk, or another implementation, to export the metrics)"
    ) from exc

__all__ = ["COUNTERS", "GAUGES", "Instrumentation", "instrument"]

#: Stats published as observable counters: (stats field, unit, description).
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("iterations", "{iteration}", "Loop iterations"),
    ("callbacks", "{callback}", "Callbacks and task steps run"),
    ("timers_scheduled", "{timer}", "Timers scheduled"),
    ("timers_cancelled", "{timer}", "Timers cancelled"),
    ("timers_fired", "{timer}", "Timers fired"),
    ("bytes_read", "By", "Bytes received by transports and sock_recv*"),
    ("bytes_written", "By", "Bytes written to transports and sock_sendall"),
    ("messages_read", "{message}", "Reads delivered"),
    ("messages_written", "{message}", "Writes made"),
    ("run_time", "s", "Time inside run_forever"),
    ("busy_time", "s", "Time running, not blocked waiting for I/O nor polling"),
    ("blocked_time", "s", "Time blocked waiting for I/O"),
    ("poll_time", "s", "Time polling before blocking"),
    ("poll_hits", "{poll}", "Polls before blocking that found events"),
    ("poll_misses", "{poll}", "Polls before blocking that found nothing"),
)

#: Stats published as observable gauges: (stats field, unit, description).
GAUGES: tuple[tuple[str, str, str], ...] = (
    ("ready", "{callback}", "Callbacks in the ready queue"),
    ("ready_max", "{callback}", "Most callbacks in the ready queue at once"),
    ("readers", "{fd}", "fds watched for reading"),
    ("writers", "{fd}", "fds watched for writing"),
    ("transports", "{transport}", "Socket transports alive"),
    ("servers", "{socket}", "Listening sockets being served"),
    ("timer_lag.last", "s", "Lateness of the last timer fired"),
    ("timer_lag.max", "s", "Largest timer lateness"),
    ("queue_wait.last", "s", "Ready-queue wait of the last sampled callback"),
    ("queue_wait.max", "s", "Largest sampled ready-queue wait"),
)


def _value(stats: Any, field: str) -> float:
    value: Any = stats
    for part in field.split("."):
        value = getattr(value, part)
    return float(value) if isinstance(value, float) else int(value)


class Instrumentation:
    """The instruments :func:`instrument` registered for one loop. A closed
    loop reports nothing; :meth:`stop` stops reporting at once."""

    def __init__(self, loop: Any, meter: Any, prefix: str, attributes: dict[str, Any]) -> None:
        self._loop = loop
        self._attributes = attributes
        self._stopped = False
        self.instruments: list[Any] = []
        kinds = (
            (COUNTERS, meter.create_observable_counter),
            (GAUGES, meter.create_observable_gauge),
        )
        for fields, create in kinds:
            for field, unit, description in fields:
                self.instruments.append(
                    create(
                        f"{prefix}.{field}",
                        callbacks=[self._callback(field)],
                        unit=unit,
                        description=description,
                    )
                )

    def _callback(self, field: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            loop = self._loop
            if self._stopped or loop.is_closed():
                return []
            return [Observation(_value(loop.stats(), field), self._attributes)]

        return observe

    def stop(self) -> None:
        """Stop reporting this loop's figures."""
        self._stopped = True


def instrument(
    loop: Any,
    meter_provider: Any = None,
    *,
    prefix: str = "ferroloop.loop",
    attributes: dict[str, Any] | None = None,
) -> Instrumentation:
    """Publish ``loop.stats()`` through ``meter_provider`` (the global one when
    ``None``) as instruments named ``<prefix>.<field>``, each observation
    carrying ``attributes``."""
    if not callable(getattr(loop, "stats", None)):
        raise TypeError(f"instrument() needs a ferroloop loop, not {type(loop).__name__}")
    if meter_provider is None:
        meter = metrics.get_meter("ferroloop")
    else:
        meter = meter_provider.get_meter("ferroloop")
    return Instrumentation(loop, meter, prefix, dict(attributes or {}))
