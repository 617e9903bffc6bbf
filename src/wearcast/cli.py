"""The ``wearcast`` command: one sub-command per pipeline stage."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich import box
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from wearcast.config import InvalidSettings, Settings, load_settings
from wearcast.rig import Defect

app = typer.Typer(
    help="Predictive maintenance for rolling bearings, from vibration recordings (IMS, PRONOSTIA).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


class _Console(Console):
    """Off a terminal (a file, a pipe, CI) rich assumes 80 columns and wraps a table's cells
    over several lines; there, unless COLUMNS says otherwise, the tables get room."""

    _WIDTH_OFF_TERMINAL = 160

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.is_terminal or "COLUMNS" in os.environ:
            return size
        return ConsoleDimensions(max(size.width, self._WIDTH_OFF_TERMINAL), size.height)


console = _Console()
# Errors are never hard-wrapped: a long path in a message stays whole, to copy or grep.
err = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document for scripts")]


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.obj


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


# Off a terminal (a log file, CI, nohup) a spinner prints nothing: a line at each new stage and
# at least this often instead, so a silent log means a stuck job, not a busy one.
_PROGRESS_EVERY_S = 30.0


@contextlib.contextmanager
def working(what: str) -> Iterator[Callable[[str], None]]:
    """A long step's progress: ``say(message)`` updates a spinner on a terminal; elsewhere it
    prints a timestamped line when the stage (the message before its first colon) changes."""
    if err.is_terminal:
        with err.status(what) as status:
            yield lambda message: status.update(f"{what}: {message}")
        return
    last_stage, last_at, unsaid = None, 0.0, None

    def line(message: str) -> None:
        err.print(f"{datetime.now():%H:%M:%S} {what}: {message}", highlight=False)

    def say(message: str) -> None:
        nonlocal last_stage, last_at, unsaid
        stage, now = message.split(":", 1)[0], time.monotonic()
        if stage != last_stage and unsaid is not None:
            line(unsaid)  # where the stage before got to ("search ...: 9 trials, 15 s")
        if stage != last_stage or now - last_at >= _PROGRESS_EVERY_S:
            line(message)
            last_stage, last_at, unsaid = stage, now, None
        else:
            unsaid = message

    say("started")
    yield say


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}")  # text, not markup: "[low, high]"
    return typer.Exit(2)


@app.callback()
def main(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            help="where wearcast keeps its files (default: $WEARCAST_HOME or ~/.wearcast)"
        ),
    ] = None,
) -> None:
    # mlflow narrates its own bookkeeping (database tables created and migrated) at INFO: the
    # commands say what matters; MLFLOW_LOGGING_LEVEL set by the user still wins.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        ctx.obj = load_settings(home=home) if home else load_settings()
    except InvalidSettings as exc:
        raise fail("\n".join(f"invalid settings: {p}" for p in exc.problems)) from None


def _parse_failures(values: list[str]) -> dict[int, Defect] | None:
    failures = {}
    for value in values:
        bearing, _, defect = value.partition(":")
        try:
            failures[int(bearing)] = Defect(defect)
            if failures[int(bearing)] not in Defect.located():
                raise ValueError(defect)
        except ValueError:
            choices = ", ".join(d.value for d in Defect.located())
            raise fail(
                f"--failure {value!r}: expected BEARING:DEFECT, defect one of {choices}"
            ) from None
    return failures or None


@app.command()
def simulate(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Argument(help="folder to write the runs into")],
    runs: Annotated[int, typer.Option(min=1, help="runs to failure")] = 3,
    recordings: Annotated[int, typer.Option(min=2, help="recordings per run")] = 200,
    bearings: Annotated[int, typer.Option(min=1)] = 4,
    channels_per_bearing: Annotated[int, typer.Option(min=1, max=2)] = 1,
    cadence_min: Annotated[float, typer.Option(min=0.1, help="minutes between recordings")] = 10.0,
    failure: Annotated[
        list[str],
        typer.Option(
            help="BEARING:DEFECT (outer, inner, rolling) failing in every run; repeatable "
            "(default: run i fails bearing i mod 4 + 1, with outer race, inner race and "
            "rolling element defects in turn)"
        ),
    ] = [],  # noqa: B006 - Typer reads the default, never mutates it
    faults: Annotated[int, typer.Option(min=0, help="faulty recordings per run")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
    life_spread: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=2.0,
            help="standard deviation of log life: each failing run's length is drawn "
            "(median --recordings); 0: every run fails at --recordings",
        ),
    ] = 0.0,
) -> None:
    """Write an IMS-format run-to-failure dataset from the physical simulator."""
    from wearcast.simulate import plan_simulation
    from wearcast.simulate import simulate as run_simulation

    settings = settings_of(ctx)
    try:
        plan = plan_simulation(
            settings,
            runs=runs,
            recordings=recordings,
            bearings=bearings,
            channels_per_bearing=channels_per_bearing,
            cadence_min=cadence_min,
            failures=_parse_failures(failure),
            faults_per_run=faults,
            seed=seed,
            life_spread=life_spread,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    with progress_bar() as bar:
        task = bar.add_task("simulating", total=sum(len(run.timestamps) for run in plan.runs))
        run_simulation(
            plan, out_dir, workers=settings.workers, progress=lambda k: bar.advance(task, k)
        )
    for run in plan.runs:
        failed = ", ".join(f"bearing {b} ({d.value})" for b, d in run.info.failures.items())
        console.print(
            f"{out_dir / run.info.name}: {len(run.timestamps)} recordings, "
            f"fails at {run.info.end} ({failed})"
        )


@app.command()
def ingest(
    ctx: typer.Context,
    data_dir: Annotated[Path, typer.Argument(help="a run folder, or a folder of run folders")],
    as_json: JsonOpt = False,
) -> None:
    """Validate every recording; list the bad ones with the reason (inputs are not changed)."""
    from wearcast.ingest import IngestReport, check_run, discover_runs

    settings = settings_of(ctx)
    report = IngestReport()
    try:
        runs = discover_runs(data_dir, unreadable=report.quarantined)
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None
    report.seen = len(report.quarantined)
    total = sum(r.files for r in runs)
    with progress_bar() as bar:
        task = bar.add_task("validating", total=total)
        try:
            for run in runs:
                for _ in check_run(run, settings, report, relative_to=Path(data_dir)):
                    bar.advance(task)
        except ValueError as exc:
            raise fail(str(exc)) from None
        bar.update(task, completed=total)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        say_quarantined(console, report.quarantined)
        uses = sorted({q.reason for q in report.ignored})
        for use in uses:
            count = sum(q.reason == use for q in report.ignored)
            console.print(escape(f"{count} file(s) {use}"))
        console.print(
            f"{report.seen} files in {len(runs)} run(s): {len(report.ingested)} ingested, "
            f"{len(report.quarantined)} quarantined, {len(report.ignored)} ignored"
            + ("" if report.reconciled else " [red](counts do not reconcile)[/red]")
        )
    if not report.reconciled:
        raise typer.Exit(1)


@app.command("describe-run")
def describe_run(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="one run folder")],
    name: Annotated[str | None, typer.Option(help="run name (default: the folder's)")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="ims or pronostia (default: from the files)")
    ] = None,
    date: Annotated[
        str | None,
        typer.Option(help="date of the first recording, for formats that hold only the time"),
    ] = None,
    failure: Annotated[
        list[str],
        typer.Option(
            help="BEARING:DEFECT (outer, inner, rolling, unknown) that ended the run at its last "
            "recording; repeatable. None: the bearings are still running"
        ),
    ] = [],  # noqa: B006 - Typer reads the default, never mutates it
    bearings: Annotated[int | None, typer.Option(min=1, help="bearings in the run")] = None,
    shaft_rpm: Annotated[float | None, typer.Option(min=0.001)] = None,
    load_n: Annotated[float | None, typer.Option(min=0.001, help="radial load, N")] = None,
    sampling_rate_hz: Annotated[float | None, typer.Option(min=0.001)] = None,
    n_balls: Annotated[int | None, typer.Option(min=1)] = None,
    ball_diameter_mm: Annotated[float | None, typer.Option(min=0.001)] = None,
    pitch_diameter_mm: Annotated[float | None, typer.Option(min=0.001)] = None,
    contact_angle_deg: Annotated[float | None, typer.Option(min=0, max=89.9)] = None,
    force: Annotated[bool, typer.Option(help="replace an existing run.json")] = False,
) -> None:
    """Write a run's run.json: what is given here, with start and end from its recordings."""
    from wearcast.formats import detect_format, get_format
    from wearcast.ingest import date_run
    from wearcast.rig import RUN_METADATA_FILE, RunInfo
    from wearcast.storage import write_atomic

    if not run_dir.is_dir():
        raise fail(f"{run_dir}: no such folder (give one run's folder of recordings)")
    target = run_dir / RUN_METADATA_FILE
    if target.exists() and not force:
        raise fail(f"{target} exists (--force replaces it)")
    failures = {}
    for value in failure:
        bearing, colon, defect = value.partition(":")
        if not colon or not bearing.strip().isdigit():
            raise fail(
                f"--failure {value}: expected BEARING:DEFECT, a bearing number and one of "
                f"{', '.join(d.value for d in Defect)} (e.g. 1:unknown)"
            )
        failures[bearing] = defect
    given = {
        "name": name or run_dir.resolve().name,
        "format": fmt,
        "n_bearings": bearings,
        "failures": failures,
        "start": date,
        "shaft_rpm": shaft_rpm,
        "load_n": load_n,
        "sampling_rate_hz": sampling_rate_hz,
        "n_balls": n_balls,
        "ball_diameter_mm": ball_diameter_mm,
        "pitch_diameter_mm": pitch_diameter_mm,
        "contact_angle_deg": contact_angle_deg,
    }
    try:
        info = RunInfo.from_dict({k: v for k, v in given.items() if v is not None}, where="run")
        kind = get_format(info.format) if info.format else detect_format(os.listdir(run_dir))
        if date is None and kind is not None and not kind.named_by_time:
            raise ValueError(
                f"{run_dir}: {kind.name} files hold only the time of day: give --date "
                "(the date of the run's first recording, YYYY-MM-DD)"
            )
        info = date_run(run_dir, info)
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None
    replaced = _fields_of(target) if target.exists() else {}
    write_atomic(target, info.to_json() + "\n")
    console.print(escape(f"{target}:"))
    print(info.to_json())
    # Replaced, not merged: what it held and no longer holds is said, so it can be put back
    # (start and end come from the recordings).
    now = info.as_dict()
    gone = {k: v for k, v in replaced.items() if k not in ("start", "end") and now.get(k) != v}
    if gone:
        err.print(
            f"[yellow]note:[/yellow] {escape(str(target))} replaced; of what it held, not given "
            f"again: {escape(json.dumps(gone))}",
            soft_wrap=True,
        )


def _fields_of(path: Path) -> dict:
    """A JSON file's fields (none if it is not a JSON object)."""
    try:
        fields = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return fields if isinstance(fields, dict) else {}


@app.command()
def inspect(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="one recording (any known format)")],
    as_json: JsonOpt = False,
) -> None:
    """Per-channel statistics of one recording, and spectrum energy near the defect frequencies.

    The rig (sampling rate, speed, geometry) is the one its folder's run.json describes."""
    from wearcast.features import DEFECTS, FeatureSpec, channel_features
    from wearcast.formats import resolve_rig
    from wearcast.ingest import RecordingError, single_file_run, validate_signal

    settings = settings_of(ctx)
    try:
        run = single_file_run(file)
        rig = resolve_rig(run.info, settings)
        data = run.format.parse(file.read_bytes())
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror}") from None
    except RecordingError as exc:  # says where in the file, not which file
        raise fail(f"{file}: {exc}") from None
    except ValueError as exc:  # names the file or its run.json already
        raise fail(str(exc)) from None
    spec = FeatureSpec.from_settings(settings, rig)
    features = channel_features(data, spec)
    col = {name: i for i, name in enumerate(spec.names)}
    keys = ("rms", "peak", "crest", "kurtosis", "skewness", "std")
    try:
        validate_signal(data, settings, expected_rows=rig.samples)
    except RecordingError as exc:
        err.print(
            f"[yellow]warning:[/yellow] ingestion would quarantine this file: {escape(str(exc))}"
        )
    channels = []
    for ch, row in enumerate(features, start=1):  # numbered as validation's messages are
        entry = {"channel": ch, **{k: float(row[col[k]]) for k in keys}}
        entry["defect_rms_g"] = {d: float(row[col[f"spec_{d}"]]) for d in DEFECTS}
        entry["envelope_snr"] = {d: float(row[col[f"env_{d}_snr"]]) for d in DEFECTS}
        channels.append(entry)
    result = {
        "file": str(file),
        "samples": int(data.shape[0]),
        "format": rig.format,
        "sampling_rate_hz": rig.sampling_rate_hz,
        "shaft_rpm": rig.shaft_rpm,
        "defect_frequencies_hz": spec.defects.as_dict(),
        "channels": channels,
    }
    if as_json:
        print(json.dumps(result, indent=2, default=_json_default))
        return
    table = Table(title=f"{file.name}: {data.shape[0]} samples x {data.shape[1]} channels")
    for header in (
        "channel",
        "rms g",
        "peak g",
        "crest",
        "kurt",
        "skew",
        *(f"env {d}" for d in DEFECTS),
    ):
        table.add_column(header, justify="right", overflow="fold")
    for c in channels:
        table.add_row(
            str(c["channel"]),
            *(f"{c[k]:.3f}" for k in ("rms", "peak", "crest", "kurtosis", "skewness")),
            *(f"{c['envelope_snr'][d]:.1f}" for d in DEFECTS),
        )
    console.print(table)
    freqs = ", ".join(f"{k.upper()} {v:.1f} Hz" for k, v in spec.defects.as_dict().items())
    console.print(f"defect frequencies at {rig.shaft_rpm:g} rpm: {freqs}")
    console.print(
        "kurtosis is Pearson's (3 for Gaussian noise); env = envelope line-to-background ratio"
    )


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def say_quarantined(out: Console, quarantined: list, shown: int = 3) -> None:
    """Each quarantined file with its reason; a reason shared by many files (a whole run
    without its start date) said once, with a few of them and how many more."""
    by_reason: dict[str, list] = {}
    for q in quarantined:
        by_reason.setdefault(q.reason, []).append(q)
    for reason, files in by_reason.items():
        for q in files[:shown]:
            out.print(f"[yellow]quarantined[/yellow] {escape(f'{q.file}: {reason}')}")
        if len(files) > shown:
            out.print(f"[yellow]quarantined[/yellow] {len(files) - shown} more for the same reason")


@app.command()
def featurize(
    ctx: typer.Context,
    data_dir: Annotated[Path, typer.Argument(help="a run folder, or a folder of run folders")],
    out: Annotated[
        Path | None, typer.Option("--out", help="table folder (default: HOME/tables/default)")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="files per committed batch")] = 256,
    as_json: JsonOpt = False,
) -> None:
    """Validate and featurize recordings into the training table (incremental, all cores)."""
    from wearcast.dataset import featurize as featurize_folder
    from wearcast.ingest import Quarantined

    settings = settings_of(ctx)
    out = out or settings.tables_dir / "default"
    with progress_bar() as bar:
        task = bar.add_task("featurizing", total=None)
        try:
            result = featurize_folder(
                data_dir,
                out,
                settings,
                batch_size=batch_size,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except (OSError, ValueError) as exc:
            raise fail(str(exc)) from None
    report = result.table.parent / "quarantine.json"
    if as_json:
        print(
            json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(result).items()})
        )
    else:
        if result.quarantined:
            say_quarantined(console, [Quarantined(**q) for q in json.loads(report.read_text())])
        console.print(
            f"{result.table}: {result.rows} rows; {result.processed} new or changed files read, "
            f"{result.ingested} ingested and {result.quarantined} quarantined in all (see {report})"
        )
    if not result.rows:
        raise fail(f"nothing featurized: every recording under {data_dir} is quarantined")


def _train_and_gate(settings: Settings, table: Path, *, register: bool = True, **options) -> dict:
    """Train, evaluate, report, register and gate: what `train` and the main job do."""
    from wearcast.retrain import gate_challenger, train_challenger

    with working("training") as say:
        summary = train_challenger(settings, table, register=register, progress=say, **options)
    _say_how_the_search_ended(summary, settings, options.get("max_trials"))
    if register:
        with working("gate") as say:  # both configurations refitted on the same folds
            decision = gate_challenger(
                settings,
                table,
                summary["version"],
                runs_meta=options.get("runs_meta"),
                progress=say,
            )
        summary.update(
            model=settings.model_name,
            promoted=decision.promoted,
            gate_reason=decision.reason,
            tracking_uri=settings.resolved_tracking_uri,
        )
    return summary


def _say_how_the_search_ended(summary: dict, settings: Settings, max_trials: int | None) -> None:
    """A search stopped by the clock chooses by how fast the machine was: say so."""
    trials, wanted = summary.get("search_trials"), max_trials or settings.search_max_trials
    if not trials or (wanted and trials >= wanted):  # no search (a given config), or all ran
        return
    if wanted:
        said = f"stopped the search after {trials} of {wanted} trials"
    else:
        said = f"ended the search after {trials} trials"
    err.print(
        f"[yellow]note:[/yellow] the budget ({settings.search_budget_s:g} s) {said}: another "
        "machine, or this one busier, may choose another model; --max-trials N with a budget "
        "that lets them all run gives the same model anywhere",
        soft_wrap=True,
    )


def _wear_no_better(metrics: dict) -> list[str]:
    """What to say where the wear model's held-out error is no better than always 0."""
    said = []
    for labels in ("piecewise", "linear"):
        model = metrics.get(f"wear_mae_{labels}_model")
        zero = metrics.get(f"wear_mae_{labels}_always0")
        if model is not None and zero is not None and model >= zero:
            said.append(
                f"against the {labels} labels the wear model's held-out error ({model:.4g}) "
                f"is no better than always 0 ({zero:.4g})"
            )
    return said


def _print_training(summary: dict, settings: Settings) -> None:
    m = summary["metrics"]
    table = Table(title="held-out evaluation of the wear model")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in m.items():
        table.add_row(key, f"{value:.4g}")
    console.print(table)
    served = (
        "early warning below"
        if summary.get("early_warning")
        else "`wearcast evaluate TABLE --life` measures it"
    )
    console.print(
        f"alarm figures and rul_mae_h above: the wear model's own rule (wear above "
        f"{settings.alarm_threshold:g}, {settings.alarm_k} of {settings.alarm_n}) and its wear "
        f"trend; the API alarms on the health indicator ({served}). always0 and age are trivial "
        "baselines; age is the fraction of the run elapsed, which knows each run's failure time "
        "(on a failing bearing it is the linear label itself; its error comes from the healthy "
        "ones): a bar, not a rival"
    )
    for said in _wear_no_better(m):
        console.print(f"[yellow]note:[/yellow] {said}")
    for title in ("early_warning", "remaining_life"):
        if summary.get(title):
            console.print(_records_table(title.replace("_", " "), summary[title]))
    if summary.get("early_warning_not_measured"):
        console.print(f"early warning not measured: {summary['early_warning_not_measured']}")
    console.print(f"chosen model: {summary['config']}")
    if "version" in summary:
        verdict = (
            "[green]promoted to champion[/green]"
            if summary["promoted"]
            else "[yellow]kept as challenger[/yellow]"
        )
        console.print(
            f"{summary['model']} version {summary['version']}: {verdict} ({summary['gate_reason']})"
        )
        # Commands and paths are copied: never wrapped at the terminal's width.
        console.print(
            f"tracking: mlflow ui --backend-store-uri {summary['tracking_uri']}", soft_wrap=True
        )
    console.print(f"report: {summary['report']}", soft_wrap=True)


@app.command()
def train(
    ctx: typer.Context,
    table: Annotated[
        Path, typer.Argument(help="a wearcast table folder, or a CSV/Parquet feature table")
    ],
    runs_meta: Annotated[
        Path | None,
        typer.Option(
            help="JSON {run: {failures: {bearing: defect}, start, end}} for tables made elsewhere"
        ),
    ] = None,
    indicator: Annotated[
        str | None, typer.Option(help="health indicator column for the onset")
    ] = None,
    label_strategy: Annotated[
        str | None, typer.Option(help="piecewise or linear (default: setting)")
    ] = None,
    holdout: Annotated[str, typer.Option(help="held-out unit: run, or bearing")] = "run",
    features: Annotated[
        str | None, typer.Option(help="both, relative or absolute (default: searched)")
    ] = None,
    budget: Annotated[float | None, typer.Option(help="search budget in seconds")] = None,
    max_trials: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="trials of each search: the same model on any machine, the budget only a cap "
            "(default: the setting search_max_trials, else as many as the budget allows)",
        ),
    ] = None,
    register: Annotated[bool, typer.Option(help="log to MLflow, register and gate")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Search the model, evaluate it held out, register it and promote it through the gate."""
    settings = settings_of(ctx)
    if budget is not None:
        settings = settings.model_copy(update={"search_budget_s": budget})
    if label_strategy not in (None, "piecewise", "linear"):
        raise fail("--label-strategy must be piecewise or linear")
    if holdout not in ("run", "bearing"):
        raise fail("--holdout must be run or bearing")
    if features not in (None, "both", "relative", "absolute"):
        raise fail("--features must be both, relative or absolute")
    try:
        summary = _train_and_gate(
            settings,
            table,
            runs_meta=runs_meta,
            indicator=indicator,
            label_strategy=label_strategy,
            holdout=holdout,
            features_mode=features,
            max_trials=max_trials,
            register=register,
        )
    except (OSError, ValueError, LookupError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(summary, indent=2, default=_json_default))
    else:
        _print_training(summary, settings)


def _cell(value: object) -> str:
    if value is None:  # a figure that does not exist (no failure caught: no lead)
        return "-"
    if not isinstance(value, float):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    return "0" if abs(value) < 5e-4 else f"{value:.3g}"


# Short headers: eight figures side by side in an 80-column terminal.
_HEADERS = {
    "failures": "failed",
    "median_lead_h": "median lead h",
    "min_lead_h": "min lead h",
    "alarmed_in_first_half": "in 1st half",
    "false_alarms": "false",
    "false_alarms_per_1000h": "false /1000 h",
    "phm2012_score": "PHM 2012",
    "abs_error_h": "abs error h",
    "estimator": "method",
}


def _records_table(title: str, rows: list[dict]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in rows[0] if rows else []:
        header = _HEADERS.get(column, column.replace("error_pct_", "error % ").replace("_", " "))
        named = column in ("detector", "estimator")
        table.add_column(header, justify="left" if named else "right", overflow="fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    return table


@app.command()
def evaluate(
    ctx: typer.Context,
    table: Annotated[
        Path, typer.Argument(help="a wearcast table folder, or a CSV/Parquet feature table")
    ],
    model_version: Annotated[int | None, typer.Option(help="default: the champion")] = None,
    runs_meta: Annotated[Path | None, typer.Option()] = None,
    holdout: Annotated[str, typer.Option(help="run, or bearing")] = "run",
    life: Annotated[
        bool,
        typer.Option(
            help="also early warning and remaining life, leave one run out, in the PHM 2012 "
            "challenge's manner, beside the RMS rule and trivial estimators"
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Held-out evaluation of a registered model's configuration on a table, with a report."""

    from wearcast import registry
    from wearcast.dataset import load_training_table
    from wearcast.report import write_report
    from wearcast.train import evaluate_config, prepare

    settings = settings_of(ctx)
    try:
        client = registry.connect(settings)
        version = model_version or registry.champion_version(client, settings)
        if version is None:
            raise LookupError("no champion yet: run `wearcast train` first")
        tags = registry.registered_version(client, settings, version).tags
        config = json.loads(tags["config"])
        data = prepare(
            load_training_table(table, settings, runs_meta=runs_meta),
            settings,
            tags.get("label_strategy") or None,
        )
        evaluation, preds = evaluate_config(config, data, settings, holdout=holdout)
        prognosis = None
        if life:
            from wearcast.prognostics_eval import evaluate_prognostics

            prognosis = evaluate_prognostics(
                data.frame, settings, wear_config=config, label_strategy=data.label_strategy
            )
    except (OSError, ValueError, LookupError) as exc:
        raise fail(str(exc)) from None
    extra = prognosis.summaries() if prognosis is not None else {}
    report = write_report(
        settings.reports_dir / f"evaluate-v{version}-{datetime.now():%Y%m%d-%H%M%S}",
        title=f"{settings.model_name} version {version}: held-out evaluation",
        evaluation=evaluation,
        preds=preds,
        settings=settings,
        early_warning=prognosis,
        context={"table": str(table), "configuration": config},
    )
    if as_json:
        print(
            json.dumps(
                {"version": version, "report": str(report), **evaluation.as_dict(), **extra},
                default=_json_default,
            )
        )
        return
    _print_training(
        {"metrics": evaluation.metrics(), "config": config, "report": str(report), **extra},
        settings,
    )
    console.print(
        f"held out: version {version}'s configuration fitted again without each held-out "
        f"{holdout}; the figures `wearcast train` printed come from a search run again inside "
        "each fold (the whole procedure, the estimate for a new model), so they differ"
    )


_SHOWN_STATES = {"alarm": "[red]ALARM[/red]", "watch": "[yellow]watch[/yellow]"}


def _answers_table(title: str, rows: list[dict]) -> Table:
    """One run's answers, files by name (a run is one folder): whole names and every column
    fit 80 columns, where paths with the run's folder pushed the interval out."""
    from wearcast.predict import answer_state

    table = Table(title=escape(title))
    table.add_column("file", overflow="fold")
    for header in ("bearing", "wear", "health", "state", "RUL h (interval)"):
        table.add_column(header, justify="right", overflow="fold")
    for r in rows:
        state = answer_state(r)
        life = "-" if r["rul_h"] is None else f"{r['rul_h']:.1f}"
        if r.get("rul_low_h") is not None:
            life += f" ({r['rul_low_h']:.1f}-{r['rul_high_h']:.1f})"
        table.add_row(
            escape(Path(r["file"]).name),
            str(r["bearing"]),
            f"{r['wear']:.3f}",
            f"{r['health']:.2f}" if "health" in r else "-",
            _SHOWN_STATES.get(state, state),
            life,
        )
    return table


def _print_answers(by_run: dict[str, list[dict]], title: str, *, every_recording: bool) -> None:
    """Each run's table (each bearing's latest answer, or ``every_recording``), then each
    bearing's alarm episodes and what its latest remaining life rests on."""
    for run, rows in by_run.items():
        if not every_recording:  # each bearing's latest answer: a run's history is the plot's
            count = len({r["file"] for r in rows})
            latest = {r["bearing"]: r for r in rows}  # rows are in time order per bearing
            rows = sorted(latest.values(), key=lambda r: r["bearing"])
            run = f"{run} ({count} recordings; each bearing's latest)"
        console.print(_answers_table(f"{run}: {title}", rows))
    results = [r for rows in by_run.values() for r in rows]
    for r in results:
        for e in r.get("episodes", []):
            raised = f" (alarm raised {e['raised']})" if e.get("raised") else ""
            console.print(
                f"bearing {r['run']}:{r['bearing']} {e['level']} episode from {e['start']}"
                f"{raised} to {e['end'] or 'now'}, peak health {e['peak_health']:.2f} at "
                f"{e['peak']}"
            )
    # What each bearing's latest remaining life rests on (before an alarm: the training
    # fleet's lives, whatever rig those were), grouped: the table has no room for it.
    latest = {(r["run"], r["bearing"]): r.get("rul_method") for r in results}
    methods: dict[str, list[str]] = {}
    for (run, bearing), method in latest.items():
        if method:
            methods.setdefault(method, []).append(f"{run}:{bearing}")
    for method, bearings in methods.items():
        console.print(f"remaining life of {', '.join(bearings)} at the last recording: {method}")


@app.command()
def predict(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="one recording, or a folder of recordings")],
    model_version: Annotated[int | None, typer.Option(help="default: the champion")] = None,
    as_json: JsonOpt = False,
    recordings: Annotated[
        bool,
        typer.Option(
            "--recordings", help="a row per recording and bearing (default: each bearing's latest)"
        ),
    ] = False,
    plots: Annotated[
        Path | None,
        typer.Option(
            help="write a PNG per run into this folder: each bearing's health indicator, "
            "threshold, alarm episodes and remaining life over time"
        ),
    ] = None,
) -> None:
    """Score recordings with the champion: wear, alarm state and remaining life per bearing."""
    from wearcast import registry
    from wearcast.predict import score_path
    from wearcast.report import plot_scored_run

    settings = settings_of(ctx)
    try:
        model, version = registry.load_model(settings, model_version)
        store = registry.client(settings)
        prognostics = registry.load_prognostics(store, settings, version)
        tags = registry.registered_version(store, settings, version).tags
        results, bad = score_path(path, model, version, settings, prognostics)
    except (OSError, ValueError, LookupError) as exc:
        raise fail(str(exc)) from None
    say_quarantined(err, bad)
    for said in _wear_no_better(json.loads(tags.get("metrics", "{}"))):
        # wear beside a state it does not decide would mislead (a user trial, PRONOSTIA)
        rests = "; the alarm state and remaining life come from the health indicator, not wear"
        err.print(
            f"[yellow]note:[/yellow] version {version}: {said}{rests if prognostics else ''}",
            soft_wrap=True,
        )
    if not results:  # nothing to answer is a failure, not an empty success
        raise fail(f"nothing scored: {len(bad)} recording(s) quarantined (reasons above)")
    # score_path answers run by run, each bearing's in time order.
    by_run = {run: list(rows) for run, rows in itertools.groupby(results, key=lambda r: r["run"])}
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        for run, rows in by_run.items():
            target = plots / f"{run}.png".replace("/", "_")
            plot_scored_run(rows, target, settings.baseline_recordings)
            err.print(f"plot: {escape(str(target))}")
    if as_json:
        print(json.dumps(results, indent=2))
        return
    title = f"{settings.model_name} version {version}"
    if "health_threshold" in results[0]:  # one threshold per version
        title += f", health indicator threshold {results[0]['health_threshold']:.2f}"
    _print_answers(by_run, title, every_recording=recordings)
    for file, warning in dict((r["file"], r["warning"]) for r in results if "warning" in r).items():
        err.print(f"[yellow]warning:[/yellow] {escape(file)}: {escape(warning)}", soft_wrap=True)


@app.command()
def promote(
    ctx: typer.Context,
    version: Annotated[int, typer.Argument(help="model version to make the champion")],
    reason: Annotated[str, typer.Option(help="why, recorded on the version")] = "promoted by hand",
) -> None:
    """Make a version the champion by hand (bypasses the gate; recorded for rollback)."""
    from mlflow.exceptions import MlflowException

    from wearcast import registry

    settings = settings_of(ctx)
    try:
        registry.promote(registry.connect(settings), settings, version, reason)
    except MlflowException as exc:
        raise fail(f"cannot promote version {version}: {exc.message}") from None
    except registry.PromotionRefused as exc:
        raise fail(str(exc)) from None
    console.print(f"{settings.model_name} version {version} is the champion")


@app.command()
def rollback(ctx: typer.Context) -> None:
    """Give the champion alias back to the previous champion."""
    from wearcast import registry

    settings = settings_of(ctx)
    try:
        version = registry.rollback(registry.connect(settings), settings)
    except (ValueError, LookupError) as exc:
        raise fail(str(exc)) from None
    console.print(f"{settings.model_name} version {version} is the champion again")


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the champion over HTTP (FastAPI/uvicorn): see /docs for the API."""
    import copy
    import os
    import tempfile
    from contextlib import ExitStack

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from wearcast.api.main import check_security
    from wearcast.prediction_log import PredictionLog

    settings = settings_of(ctx)
    if workers > 1 and not settings.reload_interval_s:
        raise fail(
            "--workers above 1 needs the registry poll (WEARCAST_RELOAD_INTERVAL_S above 0): an "
            "admin reload reaches one worker process, the poll brings the others to its model"
        )
    try:
        check_security(settings)  # refuse bad security settings before binding the port
        # and a prediction log that cannot be opened (no driver, database down), in one line
        PredictionLog(settings.resolved_prediction_db_url).engine.dispose()
    except (RuntimeError, ValueError) as exc:
        raise fail(str(exc)) from None
    os.environ["WEARCAST_HOME"] = str(settings.home)  # worker processes build the same settings
    # wearcast's own messages (model swaps, admin actions, refused work) beside uvicorn's.
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["wearcast"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    with ExitStack() as stack:
        if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # The workers' shared state, fresh for this run: every worker's metrics in one
            # scrape (wearcast.api.metrics), a failing prediction log (routes/health.py).
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="wearcast-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        uvicorn.run(
            "wearcast.api.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http="wearcast.api.protocol:BoundedHeadProtocol",  # a request's head bounded
            log_config=log_config,
            log_level="info",
            access_log=False,
        )


@app.command("api-key")
def api_key(
    role: Annotated[
        str, typer.Argument(help="reader (predict, read) or admin (also reload, promote)")
    ],
) -> None:
    """Make a new API key: give the key to the client, the hashed entry to the server."""
    from wearcast.api.security import Role, hash_key, new_key

    if role not in Role.__members__:
        raise fail(f"role must be one of {', '.join(Role.__members__)}")
    key = new_key()
    console.print(f"key (give to the client, shown once): {key}")
    console.print(f"entry for WEARCAST_API_KEYS on the server: {role}:{hash_key(key)}")


@app.command()
def pipeline(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Argument(help="recordings to use; default: simulate a dataset under home"),
    ] = None,
) -> None:
    """The main job: (simulate ->) featurize -> train -> register -> promote through the gate."""
    from wearcast.config import table_folder

    settings = settings_of(ctx)
    if data_dir is None:
        data_dir = settings.data_dir / "simulated"
        if not data_dir.exists():
            console.rule("simulate")
            # Lives scattered as real bearings' are: with equal lives the fleet's mean life
            # minus the age is exact, and the remaining-life table would say nothing.
            ctx.invoke(simulate, ctx=ctx, out_dir=data_dir, faults=2, life_spread=0.85)
    table = table_folder(settings.tables_dir, data_dir)  # another folder never merges into it
    console.rule("featurize (validate, features, labels)")
    ctx.invoke(featurize, ctx=ctx, data_dir=data_dir, out=table)
    console.rule("train, evaluate, register, gate")
    from wearcast.evaluate import TooFewUnits

    try:
        try:
            summary = _train_and_gate(settings, table)
        except TooFewUnits as exc:
            if exc.alternative is None:
                raise
            # One run (a single test rig's life): its bearings are the only units to hold out.
            err.print(
                f"[yellow]note:[/yellow] {exc.reason}: the main job holds out "
                f"{exc.alternative}s instead",
                soft_wrap=True,
            )
            summary = _train_and_gate(settings, table, holdout=exc.alternative)
    except (OSError, ValueError, LookupError) as exc:
        raise fail(str(exc)) from None
    _print_training(summary, settings)
    console.print(f"\nnext: {next_step(summary, data_dir)}", soft_wrap=True)


def next_step(summary: dict, data_dir: Path) -> str:
    """What to run after the main job registered a version."""
    if summary["promoted"]:
        return f"[bold]wearcast predict {data_dir}[/bold] scores recordings with it"
    # The champion may be another rig's model, which cannot score these recordings.
    version = summary["version"]
    return (
        f"the champion is unchanged; [bold]wearcast predict {data_dir} --model-version "
        f"{version}[/bold] scores recordings with this version, [bold]wearcast promote "
        f"{version}[/bold] makes it the champion"
    )
