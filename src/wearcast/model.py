"""The served wear model's classes: what a registered Pipeline is made of.

    features + the bearing's healthy baseline (:mod:`wearcast.baseline`)
      -> BaselineRelative (log-ratio to the baseline; scale-free features kept as they are)
      -> median imputation -> standard scaling -> optional PCA
      -> estimator (ridge, random forest, extra trees, histogram gradient boosting, k-NN)
      -> clipped to 0..1

This module is everything unpickling and serving a model needs, apart from the search
(:mod:`wearcast.train`), so the API process loads neither optuna nor matplotlib.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    ExtraTreesRegressor,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.ensemble._forest import ForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from wearcast.baseline import BASELINE_PREFIX

__all__ = [
    "FAMILIES",
    "SCALE_FREE",
    "BaselineRelative",
    "ClippedRegressor",
    "ForeignRig",
    "build_pipeline",
    "check_rig",
    "estimator",
    "smoke_test",
]

# Features without a physical scale: comparable across machines as they are.
SCALE_FREE = ("kurtosis", "crest", "env_kurtosis", "env_bpfo_snr", "env_bpfi_snr", "env_bsf_snr")
# Cheapest first: the search tries each family's defaults in this order, and a trial started
# within the budget runs to its end. A random forest's first trial on the six PRONOSTIA bearings
# (7,531 rows, 320 columns) took 205 s on 2 cores; ridge 3 s, knn 1, boosting 6, extra trees 21.
FAMILIES = ("ridge", "knn", "hist_gradient_boosting", "extra_trees", "random_forest")


class BaselineRelative(TransformerMixin, BaseEstimator):
    """Each feature relative to the bearing's baseline (columns ``baseline_<feature>``).

    Positive features become log-ratios to their baseline, others differences. ``mode``
    chooses the output: ``relative`` only, ``absolute`` (the features as they are, ignoring
    the baseline), or ``both`` (relative, plus the scale-free features as they are). A row whose
    baseline is missing falls back on the training fleet's median baseline.
    """

    def __init__(self, mode: Literal["relative", "absolute", "both"] = "both"):
        self.mode = mode

    def fit(self, X: pd.DataFrame, y=None) -> BaselineRelative:
        self.features_ = [
            c for c in X.columns if not c.startswith(BASELINE_PREFIX) and BASELINE_PREFIX + c in X
        ]
        if not self.features_:
            raise ValueError("no feature has a baseline_ column")
        values = X[self.features_]
        self.positive_ = np.array([bool((values[c].dropna() > 0).all()) for c in self.features_])
        self.fleet_baseline_ = X[[BASELINE_PREFIX + c for c in self.features_]].median()
        self.absolute_ = [c for c in SCALE_FREE if c in self.features_]
        self.absolute_index_ = [self.features_.index(c) for c in self.absolute_]
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        # NumPy, not pandas, column by column: this runs on every served request.
        x, base = self._split(X)
        if self.mode == "absolute":
            return x
        fleet = self.fleet_baseline_.to_numpy(dtype=float)
        base = np.where(np.isnan(base), fleet, base)
        out = x - base
        pos = self.positive_
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, pos] = np.log(
                np.clip(x[:, pos], 1e-12, None) / np.clip(base[:, pos], 1e-12, None)
            )
        if self.mode == "both":
            out = np.hstack([out, x[:, self.absolute_index_]])
        return out

    def _split(self, X: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The features and their baselines as arrays. An array is taken in the served order,
        the features then their baselines (no column lookups on the serving path); a frame's
        columns are selected by name."""
        width = len(self.features_)
        if isinstance(X, np.ndarray):
            if X.ndim != 2 or X.shape[1] != 2 * width:
                raise ValueError(
                    f"expected {2 * width} columns (the features, then their baselines), "
                    f"got shape {X.shape}"
                )
            values = X.astype(float, copy=False)
            return values[:, :width], values[:, width:]
        baselines = [BASELINE_PREFIX + c for c in self.features_]
        return X[self.features_].to_numpy(dtype=float), X[baselines].to_numpy(dtype=float)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        names = (
            list(self.features_)
            if self.mode == "absolute"
            else [f"rel_{c}" for c in self.features_]
        )
        if self.mode == "both":
            names += self.absolute_
        return np.asarray(names, dtype=object)


class ClippedRegressor(RegressorMixin, BaseEstimator):
    """An estimator whose predictions are clipped to the wear range 0..1."""

    def __init__(self, estimator: BaseEstimator | None = None):
        self.estimator = estimator

    def fit(self, X, y) -> ClippedRegressor:
        self.estimator_ = clone(self.estimator if self.estimator is not None else Ridge()).fit(X, y)
        return self

    def predict(self, X) -> np.ndarray:
        estimator = self.estimator_
        if isinstance(estimator, ForestRegressor):
            # A forest predicts the mean of its trees. Asking each tree directly skips the
            # per-tree dispatch of ForestRegressor.predict, which dominates for a few rows.
            rows = np.ascontiguousarray(X, dtype=np.float32)
            wear = np.mean(
                [tree.tree_.predict(rows)[:, 0] for tree in estimator.estimators_], axis=0
            )
        else:
            wear = estimator.predict(X)
        return np.clip(wear, 0.0, 1.0)


def estimator(family: str, params: dict, seed: int) -> BaseEstimator:
    """The scikit-learn estimator of one family with the given hyperparameters."""
    if family == "ridge":
        return Ridge(alpha=params.get("alpha", 1.0))
    if family in ("random_forest", "extra_trees"):
        cls = RandomForestRegressor if family == "random_forest" else ExtraTreesRegressor
        return cls(
            n_estimators=params.get("n_estimators", 150),
            max_depth=params.get("max_depth"),
            min_samples_leaf=params.get("min_samples_leaf", 3),
            max_features=params.get("max_features", 0.5),
            random_state=seed,
            n_jobs=1,
        )
    if family == "hist_gradient_boosting":
        return HistGradientBoostingRegressor(
            learning_rate=params.get("learning_rate", 0.1),
            max_leaf_nodes=params.get("max_leaf_nodes", 31),
            l2_regularization=params.get("l2_regularization", 0.0),
            random_state=seed,
        )
    if family == "knn":
        return KNeighborsRegressor(
            n_neighbors=params.get("n_neighbors", 10), weights=params.get("weights", "distance")
        )
    raise ValueError(f"unknown estimator family {family!r}; known: {', '.join(FAMILIES)}")


def build_pipeline(config: dict, seed: int = 0) -> Pipeline:
    """The whole model from a configuration (as found by :func:`wearcast.train.search`)."""
    components = config.get("pca_components")
    reduce = PCA(n_components=components, random_state=seed) if components else "passthrough"
    return Pipeline(
        [
            ("relative", BaselineRelative(mode=config.get("features", "both"))),
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            ("reduce", reduce),
            (
                "model",
                ClippedRegressor(estimator(config["family"], config.get("params", {}), seed)),
            ),
        ]
    )


def smoke_test(pipeline: Pipeline) -> None:
    """Predict on the training fleet's baseline (a healthy bearing): one finite wear in 0..1.

    Run before a version is promoted and before it is served; ``ValueError`` if it fails."""
    relative = pipeline.named_steps["relative"]
    fleet = relative.fleet_baseline_
    features = list(relative.features_)
    row = {f: fleet[BASELINE_PREFIX + f] for f in features}
    row |= {BASELINE_PREFIX + f: fleet[BASELINE_PREFIX + f] for f in features}
    wear = np.asarray(pipeline.predict(pd.DataFrame([row])), dtype=float)
    if wear.shape != (1,) or not np.isfinite(wear).all() or not 0 <= wear[0] <= 1:
        raise ValueError(f"smoke test failed: wear {wear.tolist()} on a healthy bearing")


class ForeignRig(ValueError):
    """Recordings made on another rig than the model's training recordings."""


def check_rig(features: Iterable[str], trained_on: Iterable[str]) -> None:
    """Refuse recordings whose features are not the model's. A rig's sampling rate sets its
    bands, so recordings of another format or rate bring bands the model was not trained on,
    and lack some it was; scoring them with the bands they share would answer, wrongly,
    without a word."""
    features, trained_on = set(features), set(trained_on)
    differences = [
        f"{what} {len(names)} features {whose} ({', '.join(names[:3])}"
        f"{', ...' if len(names) > 3 else ''})"
        for what, names, whose in (
            ("has", sorted(features - trained_on), "the model was not trained on"),
            ("lacks", sorted(trained_on - features), "the model needs"),
        )
        if names
    ]
    if differences:
        raise ForeignRig(
            f"the recording {' and '.join(differences)}: it was made on another rig "
            "(recording format or sampling rate) than the model's training recordings; use a "
            "model trained on recordings of this kind (one registered model per rig: "
            "WEARCAST_MODEL_NAME names it)"
        )
