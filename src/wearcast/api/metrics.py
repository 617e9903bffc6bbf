"""Prometheus metrics of one app (its own registry, so several apps can live in one process).

Under several worker processes (``wearcast serve --workers N`` sets ``PROMETHEUS_MULTIPROC_DIR``),
prometheus-client's multiprocess mode keeps each worker's values in that folder and a scrape,
whichever worker answers it, reports them all: counters summed (a worker that died, and was
replaced, still counts), the served version per live worker.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "wearcast_requests_total",
            "HTTP requests",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "wearcast_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=(0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.predictions = Counter(
            "wearcast_predictions_total",
            "bearing predictions",
            ["alarm_state"],
            registry=self.registry,
        )
        self.model_version = Gauge(
            "wearcast_model_version",
            "served model version",
            registry=self.registry,
            multiprocess_mode="liveall",  # one series per worker: a worker left behind shows
        )
        self.reloads = Counter(
            "wearcast_model_reloads_total",
            "model reloads: swapped, unchanged (admin), failed (admin or poll)",
            ["outcome"],
            registry=self.registry,
        )

        self.outbox_pending = Gauge(
            "wearcast_outbox_pending",
            "alarm notifications not delivered yet",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.notifications = Counter(
            "wearcast_notifications_total",
            "webhook calls",
            ["outcome"],
            registry=self.registry,
        )
        self.drift = Gauge(
            "wearcast_drift",
            "1 if the machine's latest recordings drifted from the model's reference",
            ["machine"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.drift_features = Gauge(
            "wearcast_drift_features",
            "drifted features (over the machine's bearings) per feature group",
            ["machine", "group"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.drift_min_q = Gauge(
            "wearcast_drift_min_q",
            "smallest BH-adjusted KS p-value per feature group",
            ["machine", "group"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )

    def show_drift(self, report) -> None:
        """Gauges of a drift report (a :class:`wearcast.monitoring.DriftReport`); machines
        not in it are dropped."""
        for gauge in (self.drift, self.drift_features, self.drift_min_q):
            gauge.clear()
        for m in report.machines:
            if not m.judged:
                continue
            self.drift.labels(m.machine).set(int(m.drifted))
            for g in m.groups:
                self.drift_features.labels(m.machine, g.group).set(g.drifted_features)
                self.drift_min_q.labels(m.machine, g.group).set(g.min_q_value)

    def swapped(self, version: int) -> None:
        """A model swap, whoever asked for it (an admin, the registry poll)."""
        self.model_version.set(version)
        self.reloads.labels("swapped").inc()

    def count(self, predictions) -> None:
        for p in predictions:
            self.predictions.labels(p.alarm_state).inc()

    def render(self) -> bytes:
        if folder := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            _forget_dead_workers(Path(folder))
            every_worker = CollectorRegistry()
            MultiProcessCollector(every_worker)
            return generate_latest(every_worker)
        return generate_latest(self.registry)


def _forget_dead_workers(folder: Path) -> None:
    """Drop the live gauges of worker processes that are gone (uvicorn replaces a worker that
    stops answering, and has no hook to say so)."""
    for path in folder.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, str(folder))
        except PermissionError:  # alive, another user's
            pass


class MetricsMiddleware:
    """Counts and times every request by its route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def record_status(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
