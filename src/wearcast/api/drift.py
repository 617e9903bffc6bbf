"""Drift of the served model's inputs, as the API sees it: on request, and checked periodically
(gauges, and the retraining trigger) by a task of the lifespan. See :mod:`wearcast.monitoring`."""

from __future__ import annotations

import asyncio
import logging

from wearcast.api.metrics import Metrics
from wearcast.api.model_store import LoadedModel, ModelStore
from wearcast.config import Settings
from wearcast.monitoring import DriftReport, evaluate_drift, trigger_retraining
from wearcast.prediction_log import PredictionLog

__all__ = ["DriftWatch", "NoReference"]

log = logging.getLogger("wearcast.api")


class NoReference(LookupError):
    """The served version was trained without a drift reference."""


class DriftWatch:
    def __init__(
        self, settings: Settings, log_: PredictionLog, store: ModelStore, metrics: Metrics
    ):
        self.settings = settings
        self.log = log_
        self.store = store
        self.metrics = metrics

    def check(self, model: LoadedModel, *, trigger: bool = False) -> DriftReport:
        """Compare every machine's latest recordings with ``model``'s reference and update the
        gauges; with ``trigger``, start retraining if a machine drifted (see
        :func:`wearcast.monitoring.trigger_retraining`)."""
        if model.reference is None:
            raise NoReference(
                f"model version {model.version} was trained without a drift reference "
                "(versions trained by this wearcast have one)"
            )
        report = evaluate_drift(
            self.log,
            model.pipeline,
            model.reference,
            self.settings,
            model_name=model.name,
            model_version=model.version,
        )
        self.metrics.show_drift(report)
        if trigger:
            trigger_retraining(self.settings, self.log, report)
        return report

    async def run(self) -> None:
        """Check every ``drift_interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.settings.drift_interval_s)
            model = self.store.current
            if model is None or model.reference is None:
                continue
            try:
                await asyncio.to_thread(self.check, model, trigger=True)
            except Exception:  # noqa: BLE001 - the next check tries again
                log.exception("drift check failed")
