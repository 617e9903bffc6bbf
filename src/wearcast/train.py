"""The wear model's search: which scikit-learn Pipeline (:mod:`wearcast.model`) to serve.

Optuna drives the search: it has a wall-clock budget (``search_budget_s``), conditional search
spaces (each estimator family its own hyperparameters) and a seeded sampler, which
scikit-learn's successive-halving search has not. Cross-validation is grouped by run and
bearing: a bearing's recordings are never split between fitting and scoring.

Why a baseline: machines differ (sensor sensitivity and mounting, resonances, DC offsets), so
an absolute vibration level that means "worn" on one bearing is normal on another. Each
bearing is compared with its own first recordings, as a vibration analyst would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import Pipeline

from wearcast.baseline import BASELINE_PREFIX, add_baselines, model_inputs
from wearcast.config import Settings
from wearcast.dataset import model_columns
from wearcast.evaluate import (
    Evaluation,
    check_holdout,
    evaluate_predictions,
    held_out_predictions,
    holdout_folds,
    holdout_units,
)

# The model's classes live in wearcast.model (what serving needs, without optuna). Models
# registered before that split were pickled as wearcast.train.<class>: these names keep them
# loadable.
from wearcast.model import (  # noqa: F401
    FAMILIES,
    BaselineRelative,
    ClippedRegressor,
    build_pipeline,
)

__all__ = [
    "SearchResult",
    "TrainingData",
    "TrainingOutcome",
    "evaluate_config",
    "fit_and_evaluate",
    "prepare",
    "search",
]


def _suggest(trial: optuna.Trial, features_mode: str | None) -> dict:
    family = trial.suggest_categorical("family", FAMILIES)
    params: dict = {}
    if family == "ridge":
        params["alpha"] = trial.suggest_float("alpha", 1e-3, 1e3, log=True)
    elif family in ("random_forest", "extra_trees"):
        params["n_estimators"] = trial.suggest_int("n_estimators", 50, 300, step=50)
        params["max_depth"] = trial.suggest_categorical("max_depth", [None, 6, 12, 24])
        params["min_samples_leaf"] = trial.suggest_int("min_samples_leaf", 1, 20, log=True)
        params["max_features"] = trial.suggest_float("max_features", 0.1, 1.0)
    elif family == "hist_gradient_boosting":
        params["learning_rate"] = trial.suggest_float("learning_rate", 0.02, 0.3, log=True)
        params["max_leaf_nodes"] = trial.suggest_int("max_leaf_nodes", 7, 63, log=True)
        params["l2_regularization"] = trial.suggest_float("l2_regularization", 1e-4, 10.0, log=True)
    else:
        params["n_neighbors"] = trial.suggest_int("n_neighbors", 3, 50, log=True)
        params["weights"] = trial.suggest_categorical("weights", ["uniform", "distance"])
    pca = trial.suggest_categorical("pca_components", [0, 0.95, 0.99])  # variance kept
    features = features_mode or trial.suggest_categorical("features", ["both", "relative"])
    return {"family": family, "params": params, "pca_components": pca, "features": features}


@dataclass
class SearchResult:
    best: dict
    best_mae: float
    leaderboard: pd.DataFrame
    seconds: float
    trials: int


def search(
    X: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray,
    settings: Settings,
    *,
    features_mode: str | None = None,
    max_trials: int | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> SearchResult:
    """Find the configuration with the lowest grouped cross-validated wear MAE within budget.

    Every family is tried once first, cheapest first (without PCA; its other hyperparameters
    drawn by the sampler), so each is on the leaderboard when the budget allows. The sampler
    is seeded: ``max_trials`` (default ``search_max_trials``) trials are the same trials on
    any machine, while a budget alone stops wherever the machine's speed has got.
    """
    max_trials = max_trials or settings.search_max_trials
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError("the search needs at least two bearings (groups) to cross-validate")
    cv = GroupKFold(n_splits=min(5, n_groups))
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is noise
    sampler = optuna.samplers.TPESampler(seed=settings.random_state)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    for family in FAMILIES:
        study.enqueue_trial(
            {"family": family, "pca_components": 0, "features": features_mode or "both"}
        )
    configs: dict[int, dict] = {}
    seconds: dict[int, float] = {}

    def objective(trial: optuna.Trial) -> float:
        config = _suggest(trial, features_mode)
        configs[trial.number] = config
        began = time.monotonic()
        scores = cross_val_score(
            build_pipeline(config, settings.random_state),
            X,
            y,
            groups=groups,
            cv=cv,
            scoring="neg_mean_absolute_error",
            n_jobs=min(settings.workers, cv.n_splits),
        )
        seconds[trial.number] = time.monotonic() - began
        return float(-scores.mean())

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        elapsed = time.monotonic() - start
        if progress:  # trials run so far: the study also lists the enqueued ones still waiting
            progress(trial.number + 1, elapsed)
        # A trial runs to its end once started, and the families come cheapest first: the
        # next is not started unless one as long as the last would still end within budget.
        if elapsed + seconds.get(trial.number, 0.0) > settings.search_budget_s:
            study.stop()

    start = time.monotonic()
    study.optimize(
        objective, n_trials=max_trials, timeout=settings.search_budget_s, callbacks=[after_trial]
    )
    done = [t for t in study.trials if t.value is not None]
    if not done:
        raise RuntimeError("the model search finished no trial within its budget")
    rows = [
        {
            "trial": t.number,
            "cv_wear_mae": t.value,
            "family": configs[t.number]["family"],
            "config": configs[t.number],
            "seconds": t.duration.total_seconds(),
        }
        for t in done
    ]
    board = pd.DataFrame(rows).sort_values("cv_wear_mae").reset_index(drop=True)
    return SearchResult(
        best=board.loc[0, "config"],
        best_mae=float(board.loc[0, "cv_wear_mae"]),
        leaderboard=board,
        seconds=time.monotonic() - start,
        trials=len(done),
    )


@dataclass
class TrainingData:
    frame: pd.DataFrame  # sorted rows with keys and labels
    X: pd.DataFrame  # model inputs: features and baselines
    y: np.ndarray  # wear under the chosen label strategy
    groups: np.ndarray  # run/bearing, for grouped cross-validation
    label_strategy: str

    @property
    def feature_columns(self) -> list[str]:
        return [c for c in self.X.columns if not c.startswith(BASELINE_PREFIX)]


def prepare(
    frame: pd.DataFrame, settings: Settings, label_strategy: str | None = None
) -> TrainingData:
    """Model inputs and target from a labelled table (see :func:`wearcast.dataset.label_table`)."""
    strategy = label_strategy or settings.label_strategy
    frame = frame.sort_values(["run", "bearing", "timestamp"], kind="stable").reset_index(drop=True)
    target = f"wear_{strategy}"
    if target not in frame:
        raise ValueError(f"the table has no {target} column: it was not labelled")
    frame = frame[frame[target].notna()].reset_index(drop=True)
    columns = model_columns(frame)
    if not columns:
        raise ValueError("the table has no numeric feature columns")
    frame = add_baselines(frame, columns, settings.baseline_recordings)
    return TrainingData(
        frame=frame,
        X=model_inputs(frame, columns),
        y=frame[target].to_numpy(dtype=float),
        groups=(frame["run"].astype(str) + "/" + frame["bearing"].astype(str)).to_numpy(),
        label_strategy=strategy,
    )


def evaluate_config(
    config: dict, data: TrainingData, settings: Settings, *, holdout: str = "run", progress=None
) -> tuple[Evaluation, pd.DataFrame]:
    """Held-out evaluation of one configuration on ``data``."""

    def fit(_unit: str, train: np.ndarray) -> Pipeline:
        return build_pipeline(config, settings.random_state).fit(data.X[train], data.y[train])

    preds = held_out_predictions(
        data.frame,
        data.X,
        data.y,
        fit,
        holdout=holdout,
        max_folds=settings.holdout_folds,
        progress=progress,
    )
    return evaluate_predictions(preds, settings), preds


@dataclass
class TrainingOutcome:
    model: Pipeline
    config: dict
    search: SearchResult
    evaluation: Evaluation
    predictions: pd.DataFrame
    importances: pd.Series
    data: TrainingData
    fold_configs: dict[str, dict]  # held-out fold -> what the search chose without it


def _importances(model: Pipeline, data: TrainingData, seed: int) -> pd.Series:
    """Permutation importance of the model's own (transformed) features, on a sample."""
    from sklearn.inspection import permutation_importance

    head, estimator = model[:-1], model[-1]
    sample = data.X.sample(min(len(data.X), 800), random_state=seed)
    ys = data.y[data.X.index.get_indexer(sample.index)]
    transformed = head.transform(sample)
    names = model.named_steps["relative"].get_feature_names_out()
    if model.named_steps["reduce"] != "passthrough":
        names = np.asarray([f"pc{i + 1}" for i in range(transformed.shape[1])], dtype=object)
    result = permutation_importance(
        estimator,
        transformed,
        ys,
        n_repeats=2,
        random_state=seed,
        scoring="neg_mean_absolute_error",
    )
    return pd.Series(result.importances_mean, index=names).sort_values(ascending=False)


def fit_and_evaluate(
    data: TrainingData,
    settings: Settings,
    *,
    holdout: str = "run",
    features_mode: str | None = None,
    max_trials: int | None = None,
    config: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainingOutcome:
    """Search (unless ``config`` is given), evaluate held out, fit the final model on all data.

    The evaluation is nested: for each held-out fold (a run, or beyond ``holdout_folds`` runs
    several) the search runs again on the other runs alone, so the figures measure the whole
    procedure (search included) on data it never saw, not a configuration chosen with the
    held-out fold's help. The wall-clock budget (``search_budget_s``) covers every search
    together: each gets an equal share.
    """
    say = progress or (lambda _msg: None)
    check_holdout(data.frame, holdout, searched=config is None)  # before the search runs
    folds = holdout_folds(data.frame, holdout, settings.holdout_folds)
    units = holdout_units(data.frame, holdout).nunique()
    if folds.nunique() < units:
        say(f"{units} {holdout}s held out in {folds.nunique()} folds (WEARCAST_HOLDOUT_FOLDS)")
    if config is not None:
        result = SearchResult(config, float("nan"), pd.DataFrame(), 0.0, 0)
        evaluation, preds = evaluate_config(
            config, data, settings, holdout=holdout, progress=lambda u: say(f"held out: {u}")
        )
        fold_configs = dict.fromkeys(sorted(folds.unique()), config)
    else:
        share = settings.model_copy(
            update={"search_budget_s": settings.search_budget_s / (folds.nunique() + 1)}
        )
        fold_configs = {}

        def searched(what: str, rows: np.ndarray) -> SearchResult:
            return search(
                data.X[rows],
                data.y[rows],
                data.groups[rows],
                share,
                features_mode=features_mode,
                max_trials=max_trials,
                progress=lambda n, s: say(f"search ({what}): {n} trials, {s:.0f} s"),
            )

        def fit(unit: str, train: np.ndarray) -> Pipeline:
            fold_configs[unit] = searched(f"without {unit}", train).best
            return build_pipeline(fold_configs[unit], settings.random_state).fit(
                data.X[train], data.y[train]
            )

        preds = held_out_predictions(
            data.frame, data.X, data.y, fit, holdout=holdout, max_folds=settings.holdout_folds
        )
        evaluation = evaluate_predictions(preds, settings)
        result = searched("all data", np.ones(len(data.y), dtype=bool))
    say("fitting the final model on all data")
    model = build_pipeline(result.best, settings.random_state).fit(data.X, data.y)
    return TrainingOutcome(
        model=model,
        config=result.best,
        search=result,
        evaluation=evaluation,
        predictions=preds,
        importances=_importances(model, data, settings.random_state),
        data=data,
        fold_configs=fold_configs,
    )
