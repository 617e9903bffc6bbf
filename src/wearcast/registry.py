"""MLflow tracking and model registry: every model versioned, production only gets a better one.

The embedded default is a SQLite store and an artifact folder under ``WEARCAST_HOME/mlflow``;
``WEARCAST_TRACKING_URI`` pointing at an MLflow server switches to it with no code change.

Promotion is a gate: a new version gets the alias ``champion`` only if, on the same held-out
evaluation of the same table, it beats the champion's configuration by the margin and has no
more missed failures and no more false alarms. Otherwise it stays a challenger, and the reason
is written on the version (tags ``gate_decision`` and ``gate_reason``). Every change of
champion is appended to the registered model's ``champion_history`` tag, which is what
``rollback`` walks back. A version is promoted only once it loaded and passed its smoke test
(:func:`wearcast.model.smoke_test`); otherwise the registry is left as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cloudpickle
import joblib
import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature

from wearcast.config import Settings
from wearcast.model import smoke_test

if TYPE_CHECKING:  # evaluation brings matplotlib, which the serving process does not need
    from wearcast.evaluate import Evaluation

__all__ = [
    "CHAMPION",
    "GateDecision",
    "PromotionRefused",
    "client",
    "connect",
    "log_training",
    "gate",
    "promote",
    "rollback",
    "champion_version",
    "champion_history",
    "find_version",
    "load_model",
    "registered_version",
    "load_prognostics",
    "load_reference",
]

CHAMPION = "champion"
PROGNOSTICS_FILE = "prognostics.joblib"

REFERENCE_FILE = "reference.parquet"  # drift reference (wearcast.monitoring), under monitoring/
EXPERIMENT = "wearcast"


@dataclass(frozen=True)
class GateDecision:
    version: int
    promoted: bool
    reason: str
    champion_before: int | None


class PromotionRefused(RuntimeError):
    """A version that cannot be loaded or fails its smoke test: the champion is unchanged."""


def client(settings: Settings) -> MlflowClient:
    """A client of the configured store that leaves mlflow's process-wide URIs alone (the API
    polls with one; :func:`connect` is for code that logs runs)."""
    if settings.tracking_uri is None:
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    # mlflow draws a progress bar per artifact download: a model load is several small files,
    # and in a log (the API's, a DAG task's) each bar is one more line of noise. Unless the
    # user asks; set here, where the store is first used, not when this module is imported.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = settings.resolved_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured store (creating the local one if it is the default)."""
    uri = settings.resolved_tracking_uri
    if settings.tracking_uri is None:
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = None
        if settings.tracking_uri is None:
            location = (settings.mlflow_dir / "artifacts").as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return client(settings)


def dump_artifact(obj, path: Path) -> None:
    """Pickle ``obj`` to ``path`` with cloudpickle, as mlflow pickles the model: the C pickler.
    joblib's pure-Python pickler uses whatever other libraries add to ``pickle._Pickler``'s
    dispatch table; dill (imported by Airflow) adds its own reducers there, so a file written
    in a training task named dill, and the API's environment, without dill, could not load it."""
    with open(path, "wb") as file:
        cloudpickle.dump(obj, file)


def log_training(
    client: MlflowClient,
    settings: Settings,
    *,
    model,
    config: dict,
    evaluation: Evaluation,
    alarm_metrics: dict[str, float] | None = None,
    cv_mae: float,
    example: pd.DataFrame,
    report_dir,
    params: dict,
    prognostics=None,
    reference: pd.DataFrame | None = None,
) -> int:
    """Log one training run (parameters, metrics, report, model, the early-warning and
    remaining-life estimators and the drift reference beside it) and register the model.
    ``alarm_metrics``: the served alarm's held-out figures, beside the wear model's."""
    metrics = evaluation.metrics() | (alarm_metrics or {})
    with mlflow.start_run(run_name=f"{config['family']}-{params.get('label_strategy', '')}"):
        if reference is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / REFERENCE_FILE
                reference.to_parquet(path, index=False)
                mlflow.log_artifact(str(path), artifact_path="monitoring")
        if prognostics is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / PROGNOSTICS_FILE
                dump_artifact(prognostics, path)
                mlflow.log_artifact(str(path), artifact_path="prognostics")
        mlflow.log_params({**params, "family": config["family"], "config": json.dumps(config)})
        mlflow.log_metrics({**metrics, "cv_wear_mae": cv_mae})
        mlflow.log_artifacts(str(report_dir), artifact_path="report")
        signature = infer_signature(example, model.predict(example))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example.head(2),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            registered_model_name=settings.model_name,
        )
    version = int(info.registered_model_version)
    tags = {
        "holdout": params.get("holdout", ""),
        "config": json.dumps(config),
        "wear_mae": f"{evaluation.wear_mae:.6f}",
        "label_strategy": params.get("label_strategy", ""),
        "table_digest": params.get("table_digest", ""),
        "rows": str(params.get("rows", "")),
        "metrics": json.dumps(metrics),
        "report": str(Path(report_dir) / "report.md"),
    }
    for key, value in tags.items():
        client.set_model_version_tag(settings.model_name, str(version), key, value)
    return version


def find_version(client: MlflowClient, settings: Settings, **tags: str) -> int | None:
    """The newest registered version whose tags include all of ``tags``."""
    versions = client.search_model_versions(f"name='{settings.model_name}'")
    matching = [
        int(v.version) for v in versions if all(v.tags.get(k) == val for k, val in tags.items())
    ]
    return max(matching, default=None)


def registered_version(client: MlflowClient, settings: Settings, version: int):
    """The registered ``version`` (an mlflow ModelVersion); LookupError saying which versions
    there are if it does not exist."""
    try:
        return client.get_model_version(settings.model_name, str(version))
    except MlflowException:
        versions = client.search_model_versions(f"name='{settings.model_name}'")
        known = ", ".join(str(v) for v in sorted(int(v.version) for v in versions)) or "none"
        raise LookupError(
            f"model {settings.model_name!r} has no version {version} (registered: {known})"
        ) from None


def champion_version(client: MlflowClient, settings: Settings) -> int | None:
    try:
        return int(client.get_model_version_by_alias(settings.model_name, CHAMPION).version)
    except MlflowException:
        return None


def champion_history(client: MlflowClient, settings: Settings) -> list[int]:
    """The champions in the order they were promoted (rollbacks remove the last)."""
    model = client.get_registered_model(settings.model_name)
    return json.loads(model.tags.get("champion_history", "[]"))


def promote(client: MlflowClient, settings: Settings, version: int, reason: str) -> None:
    """Make ``version`` the champion (and remember the change for rollback), once it loaded
    and passed its smoke test; :class:`PromotionRefused` leaves the registry as it was."""
    client.get_model_version(settings.model_name, str(version))  # raises if it does not exist
    try:
        smoke_test(load_version(client, settings, version))
    except Exception as exc:  # noqa: BLE001 - whatever breaks the model, the alias stays
        raise PromotionRefused(
            f"version {version} was not promoted: it could not be loaded or failed its smoke "
            f"test ({type(exc).__name__}: {exc})"
        ) from exc
    history = champion_history(client, settings)
    client.set_registered_model_alias(settings.model_name, CHAMPION, str(version))
    client.set_registered_model_tag(
        settings.model_name, "champion_history", json.dumps([*history, version])
    )
    client.set_model_version_tag(settings.model_name, str(version), "gate_decision", "promoted")
    client.set_model_version_tag(settings.model_name, str(version), "gate_reason", reason)


def rollback(client: MlflowClient, settings: Settings) -> int:
    """Give the alias back to the previous champion; returns its version."""
    history = champion_history(client, settings)
    if len(history) < 2:
        raise ValueError("no previous champion to roll back to")
    previous = history[-2]
    client.set_registered_model_alias(settings.model_name, CHAMPION, str(previous))
    client.set_registered_model_tag(
        settings.model_name, "champion_history", json.dumps(history[:-1])
    )
    client.set_model_version_tag(
        settings.model_name, str(history[-1]), "gate_reason", f"rolled back to version {previous}"
    )
    return previous


def _input_difference(ours: set[str], theirs: set[str]) -> str:
    """How a challenger's inputs differ from the champion's, in a few words."""
    said = [f"{len(ours)} inputs against {len(theirs)}"]
    if ours - theirs:
        said.append(f"{len(ours - theirs)} of its own the champion lacks")
    if theirs - ours:
        said.append(f"{len(theirs - ours)} of the champion's it lacks")
    return ", ".join(said)


def gate(
    client: MlflowClient,
    settings: Settings,
    version: int,
    evaluate_config: Callable[[dict], Evaluation],
) -> GateDecision:
    """Promote ``version`` if it beats the champion on the same held-out evaluation.

    Like with like: both versions' configurations are evaluated by the same held-out procedure
    on the same table (``evaluate_config``), so the held-out bearings are the same rows for
    both. The challenger must lower the wear MAE, averaged over held-out bearings, by more than
    ``promotion_margin`` and more than the noise the comparison itself shows (twice the standard
    error of the per-bearing differences), and miss no more failures and raise no more false
    alarms. A version trained on another table at least as large as the champion's (the
    retraining cycle's new data) need only be as good, within that noise: ties go to the newer
    data, and the champion's own configuration trained again, which ties with itself by
    construction, is promoted without a comparison. A version already gated keeps its
    decision, so running the gate twice changes nothing.
    """
    tags = client.get_model_version(settings.model_name, str(version)).tags
    if "gate_decision" in tags:
        return GateDecision(
            version,
            tags["gate_decision"] == "promoted",
            tags.get("gate_reason", ""),
            champion_version(client, settings),
        )
    current = champion_version(client, settings)
    if current is None:
        promote(client, settings, version, "first model: no champion to beat")
        return GateDecision(version, True, "first model: no champion to beat", None)
    ours, theirs = (set(model_inputs(client, settings, v)) for v in (version, current))
    if ours != theirs:
        # Another rig's model (other bands, other channels): it cannot serve the champion's
        # machines, nor the champion its recordings; the comparison would say nothing.
        return _keep_champion(
            client,
            settings,
            version,
            current,
            f"version {version} takes other inputs than champion version {current} "
            f"({_input_difference(ours, theirs)}): another rig's or another feature set's "
            f"model; serve it under a model name of its own (WEARCAST_MODEL_NAME) or promote "
            f"it by hand (`wearcast promote {version}`) to replace the champion",
        )
    champion_tags = client.get_model_version(settings.model_name, str(current)).tags
    champion_config = json.loads(champion_tags["config"])
    fresher, data_said = _fresher_data(tags, champion_tags)
    if json.loads(tags["config"]) == champion_config:
        # Compared with itself on one table it ties by construction: only the data differs.
        if not fresher:
            why = f"version {version} is its configuration trained again on {data_said}"
            return _keep_champion(client, settings, version, current, why)
        reason = (
            f"refits version {current}'s configuration on {data_said}: a configuration compared "
            "with itself ties, so the model of the newer data serves"
        )
        promote(client, settings, version, reason)
        return GateDecision(version, True, reason, current)
    champion = evaluate_config(champion_config)
    challenger = evaluate_config(json.loads(tags["config"]))
    theirs = {(b.run, b.bearing): b.wear_mae for b in champion.bearings}
    diffs = np.array([b.wear_mae - theirs[(b.run, b.bearing)] for b in challenger.bearings])
    noise = 2 * diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else np.inf
    # Differences and margins to three significant digits: at four decimals a gate said
    # "-0.0003 ...: does not beat it by 0.0003" (an operations trial).
    needed = max(settings.promotion_margin, noise)
    margin = settings.promotion_margin
    problems = []
    # Newer data need only be as good within the noise; the same data must win beyond it.
    if not diffs.mean() < (needed if fresher else -needed):
        missed = "worse by more than" if fresher else "does not beat it by"
        problems.append(
            f"wear MAE {challenger.wear_mae:.4f} against the champion's {champion.wear_mae:.4f}, "
            f"{diffs.mean():+.3g} per held-out bearing: {missed} {needed:.3g}, the larger of "
            f"the promotion margin ({margin:g}) and twice the standard error of the "
            f"{len(diffs)} per-bearing differences ({noise:.3g})"
        )
    if challenger.missed_failures > champion.missed_failures:
        problems.append(
            f"its wear rule misses {challenger.missed_failures} failures, the champion's "
            f"{champion.missed_failures}"
        )
    if challenger.false_alarms_per_1000h > champion.false_alarms_per_1000h + 1e-9:
        problems.append(
            f"its wear rule raises {challenger.false_alarms_per_1000h:.2f} false alarms per "
            f"1000 h, the champion's {champion.false_alarms_per_1000h:.2f}"
        )
    for who, e in (("champion", champion), ("challenger", challenger)):
        client.set_model_version_tag(
            settings.model_name, str(version), f"{who}_wear_mae_same_data", f"{e.wear_mae:.6f}"
        )
    if problems:
        # Not the figures train printed (the search rerun inside each fold): both fixed
        # configurations, refitted on the same folds.
        same = "on the same held-out folds, both configurations refitted: "
        return _keep_champion(client, settings, version, current, same + "; ".join(problems))
    if diffs.mean() < -needed:
        reason = (
            f"beats version {current}: wear MAE {challenger.wear_mae:.4f} < "
            f"{champion.wear_mae:.4f} (per held-out bearing {diffs.mean():+.3g}, needed "
            f"{-needed:+.3g})"
        )
    else:
        reason = (
            f"as good as version {current} (wear MAE per held-out bearing {diffs.mean():+.3g}, "
            f"within {needed:.3g}) and trained on {data_said}: ties go to the newer data"
        )
    promote(client, settings, version, reason)
    return GateDecision(version, True, reason, current)


def _fresher_data(tags: dict, champion_tags: dict) -> tuple[bool, str]:
    """Whether a version was trained on another table at least as large as the champion's
    (a later retraining's), and the table said in words."""
    rows, champion_rows = (int(t.get("rows") or 0) for t in (tags, champion_tags))
    if tags.get("table_digest") == champion_tags.get("table_digest"):
        return False, "the same table"
    if rows < champion_rows:
        return False, f"a smaller table ({rows} rows, the champion's {champion_rows})"
    return True, f"a newer table ({rows} rows, the champion's {champion_rows or 'not recorded'})"


def _keep_champion(
    client: MlflowClient, settings: Settings, version: int, current: int, why: str
) -> GateDecision:
    reason = f"kept version {current}: {why}"
    client.set_model_version_tag(settings.model_name, str(version), "gate_decision", "challenger")
    client.set_model_version_tag(settings.model_name, str(version), "gate_reason", reason)
    return GateDecision(version, False, reason, current)


def _with_version_files(client: MlflowClient, settings: Settings, version: int, read, part=""):
    """``read`` applied to a registered version's model folder (or ``part`` of it), downloaded
    from the configured store explicitly: mlflow's process-wide tracking URI is not set in the
    API (see :func:`client`), and an MLflow server's proxied artifacts (``mlflow-artifacts:/``)
    cannot be resolved without it."""
    uri = client.get_model_version_download_uri(settings.model_name, str(version)).rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{uri}/{part}" if part else uri,
            dst_path=tmp,
            tracking_uri=settings.resolved_tracking_uri,
        )
        return read(path)


def model_inputs(client: MlflowClient, settings: Settings, version: int) -> list[str]:
    """The input columns of a registered version, from its signature (no model is loaded)."""
    return _with_version_files(
        client, settings, version, lambda p: Model.load(p).signature.inputs.input_names(), "MLmodel"
    )


def load_version(client: MlflowClient, settings: Settings, version: int):
    """One registered version as a scikit-learn Pipeline."""
    return _with_version_files(client, settings, version, mlflow.sklearn.load_model)


def load_model(settings: Settings, version: int | None = None):
    """The champion (or a given version) as a scikit-learn Pipeline, with its version."""
    store = client(settings)
    if version is None:
        version = champion_version(store, settings)
        if version is None:
            raise LookupError(
                f"model {settings.model_name!r} has no champion yet (run `wearcast train`)"
            )
    else:
        registered_version(store, settings, version)
    return load_version(store, settings, version), version


def load_prognostics(store: MlflowClient, settings: Settings, version: int):
    """The health indicator, alarm rule and remaining-life estimator trained with ``version``
    (None for a version trained before they existed)."""
    run_id = store.get_model_version(settings.model_name, str(version)).run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = store.download_artifacts(run_id, f"prognostics/{PROGNOSTICS_FILE}", tmp)
        except (MlflowException, OSError):
            return None
        return joblib.load(path)  # reads pickles, and the joblib files of earlier versions


def load_reference(store: MlflowClient, settings: Settings, version: int) -> pd.DataFrame | None:
    """The drift reference logged with ``version`` (None for a version trained without one)."""
    run_id = store.get_model_version(settings.model_name, str(version)).run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = store.download_artifacts(run_id, f"monitoring/{REFERENCE_FILE}", tmp)
        except (MlflowException, OSError):
            return None
        return pd.read_parquet(path)
