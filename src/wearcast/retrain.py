"""The retraining cycle, one function per step, shared by the CLI and the Airflow DAG.

    pending_files -> featurize_files (in parallel batches) -> build_table
      -> train_challenger -> gate_challenger -> reload_replicas, publish_report

Every step is idempotent: training skips a table it has already trained on (same content
hash, label strategy and held-out unit), the gate keeps a decision once taken, and reloading
an API that already serves the champion changes nothing. A failure anywhere leaves the
champion as it was: only the gate moves the alias, and only after a complete evaluation.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx

from wearcast import registry
from wearcast.config import Settings
from wearcast.dataset import load_training_table, table_digest
from wearcast.monitoring import reference_sample
from wearcast.prognostics import fit_prognostics
from wearcast.prognostics_eval import PrognosticsEvaluation, evaluate_prognostics
from wearcast.report import write_report
from wearcast.train import evaluate_config, fit_and_evaluate, prepare

__all__ = ["train_challenger", "gate_challenger", "reload_replicas", "publish_report"]


def _source(table: Path) -> Path:
    table = Path(table)
    source = table / "table.parquet" if table.is_dir() else table
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file (a table folder or a CSV/Parquet table)")
    return source


def train_challenger(
    settings: Settings,
    table: Path,
    *,
    runs_meta: Path | None = None,
    indicator: str | None = None,
    label_strategy: str | None = None,
    holdout: str = "run",
    features_mode: str | None = None,
    max_trials: int | None = None,
    config: dict | None = None,
    register: bool = True,
    reuse: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Search (or take ``config``), evaluate held out, write the report, and register the model
    (not promoted).

    ``reuse``: if a version was already trained on this very table (content hash, label
    strategy, held-out unit), return it instead of training again.
    """
    table = Path(table)
    digest = table_digest(_source(table))
    strategy = label_strategy or settings.label_strategy
    if register and reuse:
        client = registry.connect(settings)
        known = registry.find_version(
            client, settings, table_digest=digest, label_strategy=strategy, holdout=holdout
        )
        if known is not None:
            return {"version": known, "reused": True, "table_digest": digest}
    frame = load_training_table(table, settings, runs_meta=runs_meta, indicator=indicator)
    data = prepare(frame, settings, strategy)
    outcome = fit_and_evaluate(
        data,
        settings,
        holdout=holdout,
        features_mode=features_mode,
        max_trials=max_trials,
        config=config,
        progress=progress,
    )
    say = progress or (lambda _msg: None)
    say("fitting the health indicator and remaining life")
    prognostics = fit_prognostics(data.frame, data.feature_columns, settings)
    say("early warning beside the RMS rule, leave one run out")
    early_warning = _early_warning(data, settings)
    params = {
        "table": str(table),
        "table_digest": digest,
        "label_strategy": data.label_strategy,
        "holdout": holdout,
        "rows": len(data.frame),
        "bearings": len(set(data.groups)),
        "search_budget_s": settings.search_budget_s,
        "search_trials": outcome.search.trials,
    }
    report_dir = settings.reports_dir / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    report = write_report(
        report_dir,
        title=f"wearcast training report ({data.label_strategy} labels)",
        evaluation=outcome.evaluation,
        preds=outcome.predictions,
        settings=settings,
        leaderboard=outcome.search.leaderboard if len(outcome.search.leaderboard) else None,
        importances=outcome.importances,
        early_warning=early_warning,
        context={
            **params,
            "chosen model": outcome.config,
            # Nested evaluation: what the search chose for each fold without its held-out unit.
            "chosen per held-out fold": {u: c["family"] for u, c in outcome.fold_configs.items()},
        },
    )
    summary = {
        "report": str(report),
        "config": outcome.config,
        "cv_wear_mae": outcome.search.best_mae,
        "search_trials": outcome.search.trials,
        "metrics": outcome.evaluation.metrics(),
        "bearings": [vars(b) for b in outcome.evaluation.bearings],
        "table_digest": digest,
        "reused": False,
    }
    if isinstance(early_warning, str):
        summary["early_warning_not_measured"] = early_warning
    else:
        summary |= early_warning.summaries()
    if register:
        client = registry.connect(settings)
        summary["version"] = registry.log_training(
            client,
            settings,
            model=outcome.model,
            config=outcome.config,
            evaluation=outcome.evaluation,
            alarm_metrics=None if isinstance(early_warning, str) else early_warning.metrics(),
            cv_mae=outcome.search.best_mae,
            example=data.X.head(5),
            report_dir=report_dir,
            params=params,
            prognostics=prognostics,
            reference=reference_sample(data.frame, data.feature_columns, settings),
        )
    return summary


def _early_warning(data, settings: Settings) -> PrognosticsEvaluation | str:
    """The health indicator, the RMS rule and a ridge wear rule, leave one run out on the same
    table (the trivial alarm baselines beside the model's own figures); or why there are none."""
    try:
        return evaluate_prognostics(data.frame, settings, label_strategy=data.label_strategy)
    except ValueError as exc:  # a table these baselines cannot take is no reason to stop
        return str(exc)


def gate_challenger(
    settings: Settings,
    table: Path,
    version: int,
    *,
    runs_meta: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> registry.GateDecision:
    """Promote ``version`` if it beats the champion on the same held-out evaluation of ``table``
    (both configurations evaluated alike: :func:`wearcast.registry.gate`)."""
    say = progress or (lambda _msg: None)
    client = registry.connect(settings)
    tags = client.get_model_version(settings.model_name, str(version)).tags
    holdout = tags.get("holdout") or "run"

    @functools.cache  # read and labelled once for both configurations, and only if compared
    def training_data():
        frame = load_training_table(table, settings, runs_meta=runs_meta)
        return prepare(frame, settings, tags.get("label_strategy") or None)

    def on_same_data(config: dict):
        family = config.get("family", "model")
        return evaluate_config(
            config,
            training_data(),
            settings,
            holdout=holdout,
            progress=lambda fold: say(f"{family} (refitted on the same folds) without {fold}"),
        )[0]

    return registry.gate(client, settings, version, on_same_data)


def reload_replicas(urls: list[str], admin_key: str | None, *, timeout: float = 120.0) -> dict:
    """Ask every running replica of the wearcast API to serve the current champion.

    A replica that cannot be reached is reported, not fatal: it loads the champion when it
    starts, and its registry poller catches up. A replica that answers with an error (wrong
    key, model that does not load) fails the call, after all replicas were asked.
    """
    if not urls:
        return {"skipped": "no API URL configured"}
    headers = {"X-API-Key": admin_key} if admin_key else {}
    answers, errors = {}, []
    for url in urls:
        try:
            response = httpx.post(
                f"{url.rstrip('/')}/v1/admin/reload", headers=headers, timeout=timeout
            )
        except httpx.TransportError as exc:
            answers[url] = {"unreachable": str(exc) or type(exc).__name__}
            continue
        if response.status_code != 200:
            errors.append(f"{url} answered {response.status_code}: {response.text[:300]}")
            continue
        answers[url] = response.json()
    if errors:
        raise RuntimeError("API reload failed: " + "; ".join(errors))
    return answers


def publish_report(settings: Settings, version: int) -> Path:
    """Copy the version's training report to ``reports/published/v<version>`` and return it."""
    client = registry.connect(settings)
    tags = client.get_model_version(settings.model_name, str(version)).tags
    source = Path(tags["report"]).parent
    target = settings.reports_dir / "published" / f"v{version}"
    if not target.exists():
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        (tmp / "gate.json").write_text(
            json.dumps(
                {k: tags.get(k) for k in ("gate_decision", "gate_reason", "metrics")}, indent=1
            )
        )
        tmp.rename(target)
    return target / "report.md"
