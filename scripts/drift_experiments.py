"""Drift detection on simulated recordings replayed through the API's scoring path.

Trains a model on simulated runs, then replays held-out simulated machines recording by
recording through :class:`wearcast.api.service.Scorer` (features, baselines, prediction log,
as the API does) and runs :func:`wearcast.monitoring.evaluate_drift` after every recording:

* healthy: held-out machines (new seeds, nothing fails) from the training distribution; every
  check once the machine has ``drift_min_recordings`` is a chance of a false positive;
* gain x2 / speed -15 %: the same kind of machine, changed from recording ``--change-at`` on;
  the delay is the number of changed recordings logged when drift is first flagged;
* gain x2 from the first recording: the bearing's baseline carries the gain.

    PYTHONPATH=src python scripts/drift_experiments.py --out /tmp/drift-exp --healthy-machines 10 \
        --healthy-seed 5000   # the run in docs/monitoring.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np

from wearcast import registry
from wearcast.api.model_store import ModelStore
from wearcast.api.service import Scorer
from wearcast.config import Settings
from wearcast.dataset import featurize
from wearcast.monitoring import evaluate_drift
from wearcast.prediction_log import PredictionLog
from wearcast.retrain import train_challenger
from wearcast.simulate import (
    change_speed,
    plan_simulation,
    quantise,
    render_recording,
    simulate,
)

CONFIG = {
    "family": "random_forest",
    "params": {"n_estimators": 60},
    "pca_components": 0,
    "features": "both",
}

Change = Callable[[np.ndarray], np.ndarray]
CHANGES: dict[str, Change] = {
    "gain x2": lambda x: 2.0 * x,
    "speed -15 %": lambda x: change_speed(x, 0.85),
}


def train(settings: Settings, root: Path, runs: int, recordings: int) -> None:
    simulate(
        plan_simulation(settings, runs=runs, recordings=recordings, seed=1),
        root / "train",
        workers=settings.workers,
    )
    featurize(root / "train", root / "table", settings)
    version = train_challenger(settings, root / "table", config=CONFIG)["version"]
    registry.promote(registry.connect(settings), settings, version, "drift experiments")


def replay(
    settings,
    model,
    db: Path,
    run_plan,
    plan,
    *,
    change: Change | None,
    change_at: int,
    check_from: int,
) -> list[tuple[int, bool, float]]:
    """Score every recording of one machine; after each from ``check_from`` on, the drift
    verdict: (recording index, drifted, largest KS distance of a significant feature)."""
    log = PredictionLog(f"sqlite:///{db}")
    scorer = Scorer(settings, log)
    verdicts = []
    try:
        for i, stamp in enumerate(run_plan.timestamps):
            data = render_recording(plan, run_plan, i)
            if change is not None and i >= change_at:
                data = change(data)
            inputs = scorer.recording_inputs(scorer.raw(quantise(data), run_plan.info.name, stamp))
            scorer.score(inputs, model)
            if i >= check_from:
                report = evaluate_drift(
                    log,
                    model.pipeline,
                    model.reference,
                    settings,
                    model_name=model.name,
                    model_version=model.version,
                )
                [machine] = report.machines
                near = [f.statistic for f in machine.top_features if f.q_value < settings.drift_fdr]
                verdicts.append((i, machine.drifted, max(near, default=0.0)))
    finally:
        log.close()
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--healthy-machines", type=int, default=6)
    parser.add_argument("--changed-machines", type=int, default=4)
    parser.add_argument("--recordings", type=int, default=150)
    parser.add_argument("--change-at", type=int, default=80)
    parser.add_argument("--healthy-seed", type=int, default=1000)
    parser.add_argument(
        "--healthy-only", action="store_true", help="only the false-positive replay"
    )
    args = parser.parse_args()
    root = args.out
    settings = Settings(home=root / "home", workers=2)
    start = time.monotonic()
    if registry.champion_version(registry.client(settings), settings) is None:
        train(settings, root, runs=4, recordings=120)
    store = ModelStore(settings)
    store.reload()
    model = store.current
    print(
        f"model version {model.version}; reference: {len(model.reference)} healthy rows; "
        f"window {settings.drift_window}, min {settings.drift_min_recordings}, "
        f"FDR {settings.drift_fdr}"
    )
    results: dict = {
        "settings": {
            "window": settings.drift_window,
            "fdr": settings.drift_fdr,
            "min_recordings": settings.drift_min_recordings,
        }
    }
    n = args.recordings
    check_from = settings.baseline_recordings + settings.drift_min_recordings - 1

    def machines(count: int, seed: int):
        plan = plan_simulation(
            settings,
            runs=count,
            recordings=n,
            failures={},
            seed=seed,
            start=plan_start,
            run_prefix=f"heldout_{seed}",
        )
        return plan, plan.runs

    plan_start = datetime(2005, 1, 3)  # after the training runs

    # Held-out healthy machines: false positives.
    plan, runs = machines(args.healthy_machines, seed=args.healthy_seed)
    checks = flags = machines_flagged = 0
    closest = 0.0  # the largest KS distance of a significant feature: the margin to drift
    for k, run in enumerate(runs):
        verdicts = replay(
            settings,
            model,
            root / f"healthy_{args.healthy_seed}_{k}.db",
            run,
            plan,
            change=None,
            change_at=n,
            check_from=check_from,
        )
        checks += len(verdicts)
        flags += sum(d for _, d, _ in verdicts)
        machines_flagged += any(d for _, d, _ in verdicts)
        closest = max([closest, *(c for _, _, c in verdicts)])
    results["healthy"] = {
        "seed": args.healthy_seed,
        "machines": len(runs),
        "checks": checks,
        "flagged_checks": flags,
        "false_positive_rate": flags / checks,
        "machines_ever_flagged": machines_flagged,
        "largest_significant_ks_distance": closest,
    }
    print(
        f"healthy held-out (seed {args.healthy_seed}): {len(runs)} machines x {n} recordings, "
        f"{checks} checks, {flags} flagged ({flags / checks:.3%}); machines ever flagged: "
        f"{machines_flagged}; largest KS distance of a significant feature {closest:.3f} "
        f"(drift needs {settings.drift_min_distance})"
    )
    if args.healthy_only:
        (root / f"results_healthy_{args.healthy_seed}.json").write_text(json.dumps(results))
        return

    # Changes after the baseline.
    for index, (name, change) in enumerate(CHANGES.items()):
        plan, runs = machines(args.changed_machines, seed=2000 + index)
        delays, early = [], 0
        for k, run in enumerate(runs):
            verdicts = replay(
                settings,
                model,
                root / f"change_{index}_{k}.db",
                run,
                plan,
                change=change,
                change_at=args.change_at,
                check_from=check_from,
            )
            early += sum(d for i, d, _ in verdicts if i < args.change_at)
            first = next((i for i, d, _ in verdicts if d and i >= args.change_at), None)
            delays.append(None if first is None else first - args.change_at + 1)
        found = [d for d in delays if d is not None]
        results[name] = {
            "machines": len(runs),
            "change_at": args.change_at,
            "delays": delays,
            "flagged_before_change": early,
        }
        print(
            f"{name} from recording {args.change_at}: flagged after {delays} changed "
            f"recordings (median {statistics.median(found) if found else 'n/a'}, max "
            f"{max(found) if found else 'n/a'}; missed {len(delays) - len(found)}); "
            f"flags before the change: {early}"
        )

    # Gain x2 from the first recording: the baseline carries it.
    plan, runs = machines(args.changed_machines, seed=3000)
    ever = 0
    for k, run in enumerate(runs):
        verdicts = replay(
            settings,
            model,
            root / f"gain_start_{k}.db",
            run,
            plan,
            change=CHANGES["gain x2"],
            change_at=0,
            check_from=check_from,
        )
        ever += any(d for _, d, _ in verdicts)
    results["gain x2 from the start"] = {"machines": len(runs), "machines_ever_flagged": ever}
    print(f"gain x2 from the first recording: {ever} of {len(runs)} machines ever flagged")
    print(f"{time.monotonic() - start:.0f} s")
    (root / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
