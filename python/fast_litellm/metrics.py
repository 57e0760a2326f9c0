"""fast_litellm's metrics in Prometheus text format, host-wide.

Every component counts its calls, fallbacks, errors, declined calls and breaker trips into
the shared region as well as in the process (`_acceleration.Component._count`), so one
scrape of any worker shows the totals of every worker of the host, including workers that
have since exited. The region's own table stats come with them.

    from fast_litellm import metrics
    text = metrics.render()                     # bytes, Prometheus text format
    app.mount("/fast_litellm/metrics", metrics.asgi_app)   # any ASGI framework
    metrics.register()                          # also into prometheus_client's REGISTRY,
                                                # e.g. for LiteLLM's own /metrics

Without a region (FAST_LITELLM_SHM=off) the counts are this process's only; the
`fast_litellm_host_totals` gauge says which (1: host-wide, 0: this process).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, Iterator, List, MutableMapping, Optional

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import _acceleration

__all__ = ["CONTENT_TYPE", "FastLiteLLMCollector", "asgi_app", "register", "render"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_COUNT_HELP = {
    "calls": "Calls that took the accelerated path (host-wide).",
    "fallbacks": "Calls that fell back to LiteLLM's own code after an error (host-wide).",
    "errors": "Errors raised in the accelerated path (host-wide).",
    "declined": "Calls the accelerated path handed to LiteLLM as not its own, e.g. with Redis (host-wide).",
    "breaker_trips": "Times a process turned a component off after too many errors (host-wide).",
}

# (stats key, metric name, help, counter?) of the region's table stats.
_REGION_STATS = (
    ("capacity", "region_capacity_slots", "Counter slots in the shared region's table.", False),
    ("used", "region_used_slots", "Slots holding a live entry.", False),
    ("expired", "region_expired_slots", "Live entries past their window, reusable.", False),
    ("load_factor", "region_load_factor", "Used slots / capacity.", False),
    ("workers", "region_workers", "Processes registered in the region and alive.", False),
    ("dead_workers", "region_dead_workers", "Registered processes found dead, not yet reaped.", False),
    ("size_bytes", "region_size_bytes", "Bytes of the region mapping.", False),
    ("full_events", "region_full_events", "Inserts that found no free slot (table full).", True),
    ("inserts", "region_inserts", "Keys inserted into the table.", True),
    ("reclaimed", "region_reclaimed", "Expired or dead entries reused for a new key.", True),
    ("reaped_workers", "region_reaped_workers", "Dead processes whose slots were given back.", True),
)


class FastLiteLLMCollector(Collector):
    """Collects the components' counts and the region's stats at each scrape."""

    def collect(self) -> Iterator[Metric]:
        region = _acceleration._host_region
        components = _acceleration._components
        host = GaugeMetricFamily(
            "fast_litellm_host_totals", "1 when the counts below are host-wide (a region is mapped), 0 when per process."
        )
        host.add_metric([], 1.0 if region is not None else 0.0)
        yield host
        for count in _acceleration.HOST_COUNTS:
            family = CounterMetricFamily(f"fast_litellm_{count}", _COUNT_HELP[count], labels=["component"])
            for name, component in components.items():
                family.add_metric([name], float(_host_count(region, name, count, getattr(component, count))))
            yield family
        active = GaugeMetricFamily(
            "fast_litellm_component_active", "1 when the component is on in this process.", labels=["component"]
        )
        breaker = GaugeMetricFamily(
            "fast_litellm_breaker_open", "1 when this process's breaker turned the component off.", labels=["component"]
        )
        for name, component in components.items():
            active.add_metric([name], 1.0 if component.active else 0.0)
            breaker.add_metric([name], 1.0 if component.breaker_open else 0.0)
        yield active
        yield breaker
        if region is None:
            return
        from .host_tier import STATS, stat_key

        for name, help_text in STATS.items():
            value = region.counter_get(stat_key(name)) or 0
            yield CounterMetricFamily(f"fast_litellm_host_tier_{name}", f"{help_text} (host-wide)", value=float(value))
        stats: Dict[str, Any] = region.stats()
        for key, metric, help_text, is_counter in _REGION_STATS:
            full_name = f"fast_litellm_{metric}"
            if is_counter:
                yield CounterMetricFamily(full_name, help_text, value=float(stats[key]))
            else:
                yield GaugeMetricFamily(full_name, help_text, value=float(stats[key]))


def _host_count(region: Optional[Any], component: str, count: str, local: int) -> int:
    if region is None:
        return local
    value = region.counter_get(_acceleration.host_counter_key(component, count))
    return int(value or 0)


_registry = CollectorRegistry(auto_describe=False)
_registry.register(FastLiteLLMCollector())
_registered_default = False


def render() -> bytes:
    """The metrics in Prometheus text format (CONTENT_TYPE)."""
    return generate_latest(_registry)


def register(registry: CollectorRegistry = REGISTRY) -> None:
    """Adds fast_litellm's collector to `registry` (once), e.g. the default registry that
    LiteLLM's prometheus integration serves on its /metrics."""
    global _registered_default
    if registry is REGISTRY:
        if _registered_default:
            return
        _registered_default = True
    registry.register(FastLiteLLMCollector())


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A minimal ASGI app serving render() on GET (mount it on any path)."""
    if scope["type"] != "http":
        return
    method = scope.get("method", "GET")
    if method not in ("GET", "HEAD"):
        await _respond(send, 405, b"method not allowed\n", "text/plain; charset=utf-8")
        return
    await _respond(send, 200, render(), CONTENT_TYPE, head=method == "HEAD")


async def _respond(send: Send, status: int, body: bytes, content_type: str, head: bool = False) -> None:
    headers: List[List[bytes]] = [[b"content-type", content_type.encode()], [b"content-length", str(len(body)).encode()]]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
