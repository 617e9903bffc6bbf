"""The served model, and how a new one replaces it without a failed request.

A new version is loaded and smoke-tested beside the one serving; only then is the reference
swapped, in one assignment. A request holds the model it started with, so it sees either the
old model or the new one, never a half-loaded one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from wearcast import registry
from wearcast.baseline import BASELINE_PREFIX
from wearcast.config import Settings

__all__ = ["LoadedModel", "ModelStore"]

log = logging.getLogger("wearcast.api")


@dataclass(frozen=True)
class LoadedModel:
    pipeline: object
    name: str
    version: int
    metrics: dict[str, float]
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def features(self) -> list[str]:
        """The features the model needs (each also as a baseline)."""
        return list(self.pipeline.named_steps["relative"].features_)

    @property
    def input_columns(self) -> list[str]:
        return self.features + [BASELINE_PREFIX + f for f in self.features]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        columns = self.input_columns
        return self.pipeline.predict(X if list(X.columns) == columns else X[columns])

    def smoke_test(self) -> None:
        """Predict on the training fleet's baseline (a healthy bearing): finite, in range."""
        fleet = self.pipeline.named_steps["relative"].fleet_baseline_
        row = {f: fleet[BASELINE_PREFIX + f] for f in self.features}
        row |= {BASELINE_PREFIX + f: fleet[BASELINE_PREFIX + f] for f in self.features}
        wear = self.predict(pd.DataFrame([row]))
        if not (np.isfinite(wear).all() and 0 <= wear[0] <= 1):
            raise RuntimeError(f"version {self.version} failed its smoke test (wear {wear})")


class ModelStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.current: LoadedModel | None = None
        self.reloads = 0

    def target_version(self) -> int | None:
        if self.settings.serve_model_version is not None:
            return self.settings.serve_model_version
        return registry.champion_version(registry.connect(self.settings), self.settings)

    def load(self, version: int) -> LoadedModel:
        pipeline, version = registry.load_model(self.settings, version)
        client = registry.connect(self.settings)
        tags = client.get_model_version(self.settings.model_name, str(version)).tags
        loaded = LoadedModel(
            pipeline=pipeline,
            name=self.settings.model_name,
            version=version,
            metrics=json.loads(tags.get("metrics", "{}")),
        )
        loaded.smoke_test()
        return loaded

    def reload(self) -> tuple[bool, str]:
        """Serve the champion (or the pinned version) if it is not already served."""
        target = self.target_version()
        if target is None:
            return False, f"model {self.settings.model_name!r} has no champion in the registry"
        if self.current is not None and self.current.version == target:
            return False, f"version {target} is already served"
        candidate = self.load(target)
        previous = self.current.version if self.current else None
        self.current = candidate  # the swap: one reference assignment
        self.reloads += 1
        log.info("serving %s version %s (was %s)", candidate.name, target, previous)
        return True, f"now serving version {target} (was {previous})"

    async def poll(self) -> None:
        """Check the registry every ``reload_interval_s`` and swap in a new champion."""
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                await asyncio.to_thread(self.reload)
            except Exception:  # noqa: BLE001 - a bad new version must not stop the server
                log.exception(
                    "reload failed; still serving version %s",
                    getattr(self.current, "version", None),
                )
