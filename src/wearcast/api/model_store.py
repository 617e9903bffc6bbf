"""The served model, and how a new one replaces it without a failed request.

A new version is loaded and smoke-tested beside the one serving; only then is the reference
swapped, in one assignment. A request holds the model it started with, so it sees either the
old model or the new one, never a half-loaded one.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from wearcast import registry
from wearcast.api.metrics import Metrics
from wearcast.api.schemas import ModelInfo
from wearcast.baseline import BASELINE_PREFIX
from wearcast.config import Settings
from wearcast.model import smoke_test
from wearcast.prognostics import Prognostics

__all__ = ["LoadedModel", "ModelStore", "UnusableInput"]

log = logging.getLogger("wearcast.api")


class UnusableInput(ValueError):
    """Finite input the model cannot score: its transformed features are not finite (values
    so far out of any physical range that the baseline ratios or the scaling overflow)."""


@dataclass(frozen=True)
class LoadedModel:
    pipeline: object
    name: str
    version: int
    metrics: dict[str, float]
    prognostics: Prognostics | None = None  # None: trained before the health indicator
    # Drift reference (wearcast.monitoring); None: trained before monitoring. Not compared.
    reference: pd.DataFrame | None = field(default=None, compare=False)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    # Read several times per scored request (once per logged row): computed once per version.
    @functools.cached_property
    def features(self) -> list[str]:
        """The features the model needs (each also as a baseline)."""
        return list(self.pipeline.named_steps["relative"].features_)

    @functools.cached_property
    def input_columns(self) -> list[str]:
        return self.features + [BASELINE_PREFIX + f for f in self.features]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Wear of each row of ``X`` (columns: :attr:`input_columns`); :class:`UnusableInput`
        names the rows that overflow."""
        steps = self.pipeline.steps
        inner = X
        with np.errstate(over="ignore", invalid="ignore"):
            for _, step in steps[:-1]:  # missing values are imputed, infinities refused
                if step != "passthrough":
                    inner = step.transform(inner)
                    _refuse_infinite(np.isinf(inner).any(axis=1))
            wear = steps[-1][1].predict(inner)
        _refuse_infinite(~np.isfinite(wear))
        return wear

    def health(self, X: np.ndarray) -> np.ndarray | None:
        """The health indicator of each row of ``X`` (columns: :attr:`input_columns`); None
        for a version trained without one."""
        if self.prognostics is None:
            return None
        return self.prognostics.health.score_samples(X[:, self._health_columns])

    @functools.cached_property
    def _health_columns(self) -> np.ndarray:
        """Where the health indicator's columns are among :attr:`input_columns`."""
        position = {c: i for i, c in enumerate(self.input_columns)}
        return np.array([position[c] for c in self.prognostics.health.columns_])


def _refuse_infinite(bad: np.ndarray) -> None:
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(str(r + 1) for r in rows[:10]) + (" ..." if len(rows) > 10 else "")
        raise UnusableInput(
            f"row {shown}: the model's transformed inputs are not finite "
            "(values far outside any physical range)"
        )


class ModelStore:
    """The served model and the registry's versions, both refreshed by one poller."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics  # told of every swap, and of the poll's failures
        self.current: LoadedModel | None = None
        self.versions: list[ModelInfo] | None = None  # None: not read yet
        # Why no model is served (None once one is): every "not ready" answer says this.
        self.problem: str | None = (
            "the registry has not been read yet (the first read is under way)"
        )
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = registry.client(self.settings)
        return self._client

    def target_version(self) -> int | None:
        if self.settings.serve_model_version is not None:
            return self.settings.serve_model_version
        return registry.champion_version(self.client, self.settings)

    def load(self, version: int) -> LoadedModel:
        pipeline = registry.load_version(self.client, self.settings, version)
        tags = self.client.get_model_version(self.settings.model_name, str(version)).tags
        smoke_test(pipeline)
        prognostics = registry.load_prognostics(self.client, self.settings, version)
        if prognostics is not None:
            prognostics.smoke_test(pipeline)
        return LoadedModel(
            pipeline=pipeline,
            name=self.settings.model_name,
            version=version,
            metrics=json.loads(tags.get("metrics", "{}")),
            prognostics=prognostics,
            reference=registry.load_reference(self.client, self.settings, version),
        )

    def reload(self) -> tuple[bool, str]:
        """Serve the champion (or the pinned version) if it is not already served."""
        target = self.target_version()
        if target is None:
            return False, (
                f"model {self.settings.model_name!r} has no champion in the registry: train and "
                "promote one (wearcast train)"
            )
        if self.current is not None and self.current.version == target:
            return False, f"version {target} is already served"
        candidate = self.load(target)
        previous = self.current.version if self.current else None
        self.current = candidate  # the swap: one reference assignment
        if self.metrics is not None:
            self.metrics.swapped(target)
        log.info("serving %s version %s (was %s)", candidate.name, target, previous)
        return True, f"now serving version {target} (was {previous})"

    def refresh_versions(self) -> list[ModelInfo]:
        """Read the registry's versions and aliases (cached for GET /v1/models)."""
        name = self.settings.model_name
        found = self.client.search_model_versions(f"name='{name}'")
        aliases: dict[int, list[str]] = {}
        if found:
            for alias, version in self.client.get_registered_model(name).aliases.items():
                aliases.setdefault(int(version), []).append(alias)
        self.versions = sorted(
            (
                ModelInfo(
                    name=v.name,
                    version=int(v.version),
                    aliases=aliases.get(int(v.version), []),
                    metrics=json.loads(v.tags.get("metrics", "{}")),
                    gate_decision=v.tags.get("gate_decision"),
                    gate_reason=v.tags.get("gate_reason"),
                )
                for v in found
            ),
            key=lambda m: m.version,
        )
        return self.versions

    def sync(self) -> None:
        """One poll: the registry's versions, then the champion. What went wrong, if anything,
        is kept in :attr:`problem` for the probes and the 503s to say."""
        try:
            self.refresh_versions()
            _, detail = self.reload()
        except Exception as exc:
            reason = " ".join(str(exc).split())[:300]
            self.problem = f"the model registry did not answer ({type(exc).__name__}: {reason})"
            raise
        self.problem = None if self.current is not None else detail

    async def poll(self) -> None:
        """Check the registry every ``reload_interval_s`` and swap in a new champion."""
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                await asyncio.to_thread(self.sync)
            except Exception:  # noqa: BLE001 - a bad new version must not stop the server
                if self.metrics is not None:
                    self.metrics.reloads.labels("failed").inc()
                log.exception(
                    "reload failed; still serving version %s",
                    getattr(self.current, "version", None),
                )
