"""Prometheus metrics. Request metrics are recorded by the request middleware; the rest is read
from the live objects (pool, cache, bus, limiter, streams) when /metrics is scraped.

Each process keeps its own numbers: with several workers, scrape each one (or run one worker
per container, as compose does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chat_store.state import AppState

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# Time to first token: a local model answers in tens of milliseconds, a busy hosted one in seconds.
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)


class GenerationMetrics:
    """The service's own chat turns (services/generation), per process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "chat_store_generations",
            "Generation runs ended, by outcome: complete, failed, cancelled, handed_over "
            "(left for another process at shutdown), superseded (cancelled or taken over "
            "elsewhere).",
            ["outcome"],
            registry=registry,
        )
        self.ttft = Histogram(
            "chat_store_generation_ttft_seconds",
            "Time from sending a request to the model provider to its first token.",
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "chat_store_generation_tokens",
            "Tokens the provider reported, by kind (prompt, completion).",
            ["kind"],
            registry=registry,
        )
        self.provider_errors = Counter(
            "chat_store_provider_errors",
            "Failed provider calls, by kind (timeout, connection, status, provider).",
            ["kind"],
            registry=registry,
        )
        self.takeovers = Counter(
            "chat_store_generation_takeovers",
            "Generations this process continued after their process died.",
            registry=registry,
        )
        self.live = Gauge(
            "chat_store_generations_live",
            "Generations running in this process.",
            registry=registry,
        )
        # Every series from the start, at 0: a rate over a window after a restart needs one.
        for outcome in ("complete", "failed", "cancelled", "handed_over", "superseded"):
            self.outcomes.labels(outcome)
        for kind in ("prompt", "completion"):
            self.tokens.labels(kind)
        for kind in ("timeout", "connection", "status", "provider"):
            self.provider_errors.labels(kind)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.generation = GenerationMetrics(self.registry)
        self.requests = Counter(
            "chat_store_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "chat_store_http_request_duration_seconds",
            "Time to answer (to the end of the body; streams excluded), by route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float | None) -> None:
        """An answer sent; `seconds` it took (None for a live stream: no duration)."""
        self.requests.labels(method, route, str(status)).inc()
        if seconds is not None:
            self.latency.labels(method, route).observe(seconds)

    def watch(self, state_getter: Callable[[], AppState | None]) -> None:
        self.registry.register(_StateCollector(state_getter))


class _StateCollector(Collector):
    def __init__(self, state_getter: Callable[[], AppState | None]) -> None:
        self._state_getter = state_getter
        # The counters read from the live objects start with the process, as the others do:
        # their `_created` sample says so (a reset is told from a fall).
        self._created = time.time()

    def _counter(self, name: str, documentation: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(name, documentation, value=value, created=self._created)

    def collect(self) -> Iterator[Metric]:
        state = self._state_getter()
        if state is None:
            return
        pool = state.engine.pool
        checked_out = getattr(pool, "checkedout", None)
        overflow = getattr(pool, "overflow", None)
        yield _gauge(
            "chat_store_db_pool_in_use",
            "Connections checked out of the pool.",
            checked_out() if callable(checked_out) else 0,
        )
        yield _gauge(
            "chat_store_db_pool_overflow",
            "Connections open beyond the pool size.",
            max(0, overflow()) if callable(overflow) else 0,
        )
        cache = state.cache
        # With Redis, credentials are read through an in-process copy in front of it: its hits
        # reach no Redis counter.
        near = state.principal_cache if state.principal_cache is not cache else None
        yield self._counter(
            "chat_store_cache_hits",
            "Cache reads that found an entry.",
            getattr(cache, "hits", 0) + getattr(near, "hits", 0),
        )
        yield self._counter(
            "chat_store_cache_misses",
            "Cache reads that found nothing.",
            getattr(cache, "misses", 0),
        )
        redis_errors = (
            getattr(cache, "errors", 0) + getattr(state.bus, "errors", 0) + state.limiter.errors
        )
        yield self._counter(
            "chat_store_redis_errors", "Failed Redis calls (cache, bus, limits).", redis_errors
        )
        yield self._counter(
            "chat_store_rate_limit_rejections",
            "Requests refused with 429.",
            state.limiter.rejections,
        )
        yield _gauge(
            "chat_store_streams_open",
            "SSE streams open in this process.",
            state.streams.open_streams,
        )
        yield self._counter(
            "chat_store_streams_opened",
            "SSE streams opened by this process.",
            state.streams.opened_total,
        )
        yield _gauge(
            "chat_store_bus_subscriptions",
            "Live-stream subscriptions in this process.",
            state.bus.subscriber_count(),
        )
        yield self._counter(
            "chat_store_messages_appended",
            "Messages stored (single and batch).",
            state.counters.messages_appended,
        )
        yield self._counter(
            "chat_store_deltas_appended", "Streamed deltas stored.", state.counters.deltas_appended
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
