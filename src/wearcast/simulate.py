"""An IMS-format run-to-failure simulator: the embedded default data.

The physics, per accelerometer channel and recording (calibration in ``docs/simulator.md``):

* healthy vibration: broadband noise shaped like the real IMS spectra (a floor falling slowly
  with frequency plus the hump of a structural resonance at 3-5 kHz), shaft harmonics, the
  rig's 986 Hz machine tone and its 493 Hz subharmonic seen in every real recording, a DC offset
  and 1 mg quantisation, as the real files have;
* a defect: impacts at its defect frequency (BPFO for the outer race; BPFI for the inner race,
  amplitude-modulated as the defect turns through the load zone once per shaft revolution;
  2 x BSF for a rolling element, which strikes both races per spin, modulated by the cage at
  FTF), with 1 % slip jitter between impacts. Each impact rings the structural resonance of the
  channels (a damped oscillator); the bearing's own channels get it in full, the neighbours
  attenuated;
* wear: nothing until an onset between 45 % and 80 % of the run, then impact amplitude grows
  slowly and faster at the end, with the slow ups and downs real defects show (smoothing of
  spall edges), plus a broadband rise; healthy bearings stay healthy.

A run ends at the failure: its last recording is the failure time written in ``run.json``.
Everything is deterministic for a given seed, and each recording is computed independently
from its own seed, so runs are simulated in parallel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from pathlib import Path

import numpy as np
import scipy.fft as sfft
from scipy import signal

from wearcast.config import Settings
from wearcast.rig import (
    RUN_METADATA_FILE,
    TIMESTAMP_FORMAT,
    ZA_2115,
    BearingGeometry,
    Defect,
    RunInfo,
    bearing_channels,
)
from wearcast.storage import write_atomic

__all__ = [
    "Fault",
    "SimulationPlan",
    "RunPlan",
    "change_speed",
    "plan_simulation",
    "simulate",
    "render_recording",
    "quantise",
]

_MACHINE_TONE_HZ = 986.0  # present in every real IMS recording, at every bearing
_FULL_SCALE_MG = 20_000  # values are written in mg steps within +-20 g
_SLIP = 0.015


class Fault(StrEnum):
    """Faulty recordings the simulator can write, to exercise validation."""

    STOPPED = "stopped"  # the rig stopped: every channel flat
    TRUNCATED = "truncated"
    TEXT_CELL = "text"
    NAN = "nan"
    CLIPPED = "clipped"


@dataclass(frozen=True)
class ChannelPlan:
    floor: float  # g^2/Hz at low frequency
    resonance_hz: float
    damping: float
    hump: float  # resonance hump height, g^2/Hz
    tone: float  # machine tone amplitude, g
    offset: float  # DC offset, g


@dataclass(frozen=True)
class RunPlan:
    info: RunInfo
    timestamps: list[datetime]
    channels: list[ChannelPlan]
    channel_map: dict[int, list[int]]
    severity: dict[int, np.ndarray]  # per failing bearing, impact amplitude (g) per recording
    faults: dict[int, Fault] = field(default_factory=dict)  # recording index -> fault
    seed: int = 0


@dataclass(frozen=True)
class SimulationPlan:
    runs: list[RunPlan]
    sampling_rate_hz: float
    samples: int
    shaft_hz: float
    geometry: BearingGeometry = ZA_2115


def _severity(rng: np.random.Generator, n: int) -> tuple[float, np.ndarray]:
    """The degradation onset (fraction of the run) of a bearing that fails at the last
    recording, and its impact amplitude (g) per recording: 0 up to the onset."""
    life = np.linspace(0.0, 1.0, n)
    onset = rng.uniform(0.45, 0.8)
    u = np.clip((life - onset) / (1.0 - onset), 0.0, None)
    growth = 0.18 * (u > 0) + 0.7 * u**1.6 + 3.5 * np.exp((u - 1.0) / 0.03)
    # Slow ups and downs (correlated log-normal wobble) once the defect exists.
    wobble = np.zeros(n)
    for i in range(1, n):
        wobble[i] = 0.93 * wobble[i - 1] + rng.normal(0.0, 0.09)
    return onset, np.where(u > 0, growth * np.exp(wobble), 0.0)


def plan_simulation(
    settings: Settings,
    *,
    runs: int = 3,
    recordings: int = 200,
    bearings: int = 4,
    channels_per_bearing: int = 1,
    cadence_min: float = 10.0,
    failures: dict[int, Defect] | None = None,
    faults_per_run: int = 0,
    seed: int = 0,
    start: datetime = datetime(2004, 1, 5, 9, 0, 0),
    run_prefix: str = "sim_run",
    life_spread: float = 0.0,
) -> SimulationPlan:
    """Draw everything random about the runs; rendering a recording then needs only its seed.

    ``failures`` applies to every run (``{}``: nothing fails); by default run i fails bearing
    (i mod bearings) + 1 with the outer race, inner race and rolling element defects in turn.
    A run that fails lasts ``recordings`` recordings, or with ``life_spread`` (the standard
    deviation of log life) a log-normal draw of median ``recordings``: bearings of one type
    under one load fail at widely different times (rolling bearings' lives scatter with a
    Weibull shape near 1.5, a log-life standard deviation near 0.85).
    """
    if recordings < 2:
        raise ValueError("a run needs at least 2 recordings")
    if channels_per_bearing not in (1, 2):
        raise ValueError("channels_per_bearing must be 1 or 2")
    if faults_per_run >= recordings:
        raise ValueError("faults_per_run must be smaller than recordings")
    if not 0 <= life_spread <= 2:
        raise ValueError(f"life_spread must lie between 0 and 2, not {life_spread}")
    for b in failures or {}:
        if not 1 <= b <= bearings:
            raise ValueError(f"failing bearing {b} is not one of bearings 1..{bearings}")
    rng = np.random.default_rng(seed)
    defect_cycle = Defect.located()
    plans = []
    for r in range(runs):
        run_failures = (
            {r % bearings + 1: defect_cycle[r % len(defect_cycle)]}
            if failures is None
            else failures
        )
        run_start = start + timedelta(days=40 * r)
        length = recordings
        if life_spread and run_failures:  # drawn only then: seeds without it keep their runs
            draw = recordings * math.exp(life_spread * rng.standard_normal())
            length = max(round(draw), 2 * faults_per_run + 4, 4)
        stamps = [run_start + timedelta(minutes=cadence_min * i) for i in range(length)]
        n_channels = bearings * channels_per_bearing
        channels = [
            ChannelPlan(
                floor=rng.uniform(2.5e-7, 5.5e-7),
                resonance_hz=rng.uniform(3000.0, 5000.0),
                damping=rng.uniform(0.04, 0.08),
                hump=rng.uniform(0.6e-6, 1.8e-6),
                tone=rng.uniform(0.015, 0.07),
                offset=rng.uniform(-0.1, -0.005),
            )
            for _ in range(n_channels)
        ]
        faults: dict[int, Fault] = {}
        if faults_per_run:
            # Spread over the healthy first half so the failure trajectory stays whole.
            slots = rng.choice(np.arange(1, length // 2), size=faults_per_run, replace=False)
            kinds = list(Fault)
            faults = {int(i): kinds[k % len(kinds)] for k, i in enumerate(sorted(slots))}
        drawn = {b: _severity(rng, length) for b in run_failures}
        span = stamps[-1] - stamps[0]
        plans.append(
            RunPlan(
                info=RunInfo(
                    name=f"{run_prefix}_{r + 1:02d}",
                    n_bearings=bearings,
                    failures=dict(run_failures),
                    start=stamps[0],
                    end=stamps[-1],
                    shaft_rpm=settings.shaft_rpm,
                    # Written to run.json: simulated runs are scored against the true onset.
                    onsets={b: stamps[0] + onset * span for b, (onset, _) in drawn.items()},
                ),
                timestamps=stamps,
                channels=channels,
                channel_map=bearing_channels(n_channels, bearings),
                severity={b: severity for b, (_, severity) in drawn.items()},
                faults=faults,
                seed=int(rng.integers(2**63)),
            )
        )
    return SimulationPlan(
        runs=plans,
        sampling_rate_hz=settings.sampling_rate_hz,
        samples=settings.expected_rows,
        shaft_hz=settings.shaft_rpm / 60.0,
    )


def _impacts(
    rng: np.random.Generator, defect: Defect, plan: SimulationPlan, amplitude: float
) -> np.ndarray:
    """A train of impacts (sample-spaced, slip-jittered, load-modulated), length ``samples``."""
    fs, n = plan.sampling_rate_hz, plan.samples
    freqs = plan.geometry.defect_frequencies(plan.shaft_hz)
    rate, modulation_hz = {
        Defect.OUTER_RACE: (freqs.bpfo, 0.0),
        Defect.INNER_RACE: (freqs.bpfi, plan.shaft_hz),
        Defect.ROLLING_ELEMENT: (2 * freqs.bsf, freqs.ftf),
    }[defect]
    count = int(n / fs * rate) + 2
    periods = (1.0 + _SLIP * rng.standard_normal(count)) / rate
    times = rng.uniform(0, 1 / rate) + np.cumsum(periods) - periods[0]
    times = times[times < n / fs]
    amps = amplitude * np.abs(1.0 + 0.4 * rng.standard_normal(len(times)))
    if modulation_hz:
        phase = rng.uniform(0, 2 * np.pi)
        amps *= 0.5 * (1.0 + np.cos(2 * np.pi * modulation_hz * times + phase))
    train = np.zeros(n)
    np.add.at(train, np.minimum((times * fs).astype(int), n - 1), amps)
    return train


@cache
def _ringing_spectrum(resonance_hz: float, damping: float, fs: float, n: int) -> np.ndarray:
    """Spectrum of a unit-peak damped oscillation at the resonance (circular, length n)."""
    t = np.arange(n) / fs
    w = 2 * np.pi * resonance_hz
    ring = np.exp(-damping * w * t) * np.sin(w * math.sqrt(1 - damping**2) * t)
    return sfft.rfft(ring)


@cache
def _background_shape(
    floor: float, resonance_hz: float, hump: float, fs: float, n: int
) -> np.ndarray:
    """Amplitude per rFFT bin giving the healthy power spectral density."""
    f = sfft.rfftfreq(n, 1 / fs)
    q = 3.0
    psd = floor * (1.0 + 1.5 * np.exp(-f / 800.0)) / (1.0 + f / 6000.0) + hump / (
        1.0 + q**2 * (f / resonance_hz - resonance_hz / np.maximum(f, 1.0)) ** 2
    )
    psd[0] = 0.0
    # A complex Gaussian bin with this scale gives psd per Hz after the inverse FFT.
    return np.sqrt(psd * fs * n / 4.0)


def render_recording(plan: SimulationPlan, run: RunPlan, index: int) -> np.ndarray:
    """The samples (samples, channels) of recording ``index`` of ``run``, in g."""
    fs, n = plan.sampling_rate_hz, plan.samples
    rng = np.random.default_rng([run.seed, index])
    t = np.arange(n) / fs
    bearing_of = {ch: b for b, chs in run.channel_map.items() for ch in chs}
    trains = {
        b: _impacts(rng, run.info.failures[b], plan, 0.65 * float(sev[index]))
        for b, sev in run.severity.items()
        if sev[index] > 0
    }
    train_spectra = {b: sfft.rfft(x) for b, x in trains.items()}
    # Rolling contact in a healthy bearing: sparse random small impacts (real healthy
    # recordings have a kurtosis of 3.2 to 6, above Gaussian noise's 3).
    contact = np.zeros((n, len(run.channels)))
    hits = rng.integers(0, n, size=(int(30 * n / fs), len(run.channels)))
    np.put_along_axis(contact, hits, rng.lognormal(np.log(0.15), 0.5, hits.shape), axis=0)
    contact_spectra = sfft.rfft(contact, axis=0)
    out = np.empty((n, len(run.channels)))
    for ch, cp in enumerate(run.channels):
        lift = 1.0
        spectrum = contact_spectra[:, ch].copy()
        for b, spec in train_spectra.items():
            near = 1.0 if bearing_of[ch] == b else 0.12
            spectrum += near * spec
            if near == 1.0:
                lift += 1.0 * float(run.severity[b][index])
        spectrum *= _ringing_spectrum(cp.resonance_hz, cp.damping, fs, n)
        scale = _background_shape(cp.floor, cp.resonance_hz, cp.hump, fs, n) * lift
        spectrum += scale * (rng.standard_normal(len(scale)) + 1j * rng.standard_normal(len(scale)))
        x = sfft.irfft(spectrum, n)
        phases = rng.uniform(0, 2 * np.pi, 4)
        x += cp.tone * np.sin(2 * np.pi * _MACHINE_TONE_HZ * t + phases[0])
        x += 0.35 * cp.tone * np.sin(np.pi * _MACHINE_TONE_HZ * t + phases[1])
        x += 0.006 * np.sin(2 * np.pi * plan.shaft_hz * t + phases[2])
        x += 0.004 * np.sin(4 * np.pi * plan.shaft_hz * t + phases[3])
        out[:, ch] = x + cp.offset
    return out


def change_speed(data: np.ndarray, factor: float) -> np.ndarray:
    """The recording of a machine turning ``factor`` (0 < factor <= 1) times as fast, to first
    order: every frequency times ``factor`` (the samples played back slower). It moves the
    structural resonances too, which a real speed change does not; see docs/monitoring.md."""
    if not 0 < factor <= 1:
        raise ValueError(f"speed factor {factor} must lie in (0, 1]")
    n = len(data)
    return signal.resample(data, int(round(n / factor)), axis=0)[:n]


def quantise(data: np.ndarray) -> np.ndarray:
    """Samples as an IMS file holds them: in g to the mg, within the full scale."""
    return np.clip(np.rint(data * 1000), -_FULL_SCALE_MG, _FULL_SCALE_MG) / 1000


@cache
def _mg_strings() -> np.ndarray:
    return np.array(
        [f"{i / 1000:.3f}" for i in range(-_FULL_SCALE_MG, _FULL_SCALE_MG + 1)], dtype=object
    )


def format_recording(data: np.ndarray) -> str:
    """IMS text: tab-separated, one row per sample, in g to the mg."""
    mg = np.clip(np.rint(data * 1000).astype(np.int64), -_FULL_SCALE_MG, _FULL_SCALE_MG)
    cells = _mg_strings()[mg + _FULL_SCALE_MG]
    seps = np.full(cells.shape, "\t", dtype=object)
    seps[:, -1] = "\n"
    return "".join(np.stack([cells, seps], axis=-1).ravel().tolist())


def _apply_fault(fault: Fault, data: np.ndarray, rng: np.random.Generator) -> str:
    if fault is Fault.STOPPED:
        data = np.round(rng.normal(0, 0.001, data.shape), 3) + data.mean(axis=0)
    elif fault is Fault.CLIPPED:
        peak = np.abs(data[:, 0]).max()
        data = data.copy()
        data[:, 0] = np.clip(data[:, 0], -0.35 * peak, 0.35 * peak)
    text = format_recording(data)
    lines = text.splitlines(keepends=True)
    if fault is Fault.TRUNCATED:
        cut = len(lines) // 2
        return "".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2]
    if fault in (Fault.TEXT_CELL, Fault.NAN):
        row = int(rng.integers(len(lines)))
        cells = lines[row].rstrip("\n").split("\t")
        cells[int(rng.integers(len(cells)))] = "n/a" if fault is Fault.TEXT_CELL else "NaN"
        lines[row] = "\t".join(cells) + "\n"
    return "".join(lines)


_worker_job: tuple[SimulationPlan, Path] | None = None


def _init_worker(plan: SimulationPlan, out_dir: Path) -> None:
    global _worker_job
    _worker_job = (plan, out_dir)


def _write_one(task: tuple[int, int]) -> None:
    assert _worker_job is not None
    plan, out_dir = _worker_job
    r, index = task
    run = plan.runs[r]
    data = render_recording(plan, run, index)
    path = out_dir / run.info.name / run.timestamps[index].strftime(TIMESTAMP_FORMAT)
    fault = run.faults.get(index)
    if fault is None:
        text = format_recording(data)
    else:
        text = _apply_fault(fault, data, np.random.default_rng([run.seed, index, 1]))
    write_atomic(path, text)


def simulate(
    plan: SimulationPlan,
    out_dir: Path,
    *,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write the planned runs under ``out_dir`` (one folder per run, with its ``run.json``)."""
    out_dir = Path(out_dir)
    run_dirs = []
    for run in plan.runs:
        run_dir = out_dir / run.info.name
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / RUN_METADATA_FILE, run.info.to_json() + "\n")
        run_dirs.append(run_dir)
    tasks = [(r, i) for r, run in enumerate(plan.runs) for i in range(len(run.timestamps))]
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(
            workers, initializer=_init_worker, initargs=(plan, out_dir)
        ) as pool:
            for _ in pool.map(_write_one, tasks, chunksize=8):
                if progress:
                    progress(1)
    else:
        _init_worker(plan, out_dir)
        for task in tasks:
            _write_one(task)
            if progress:
                progress(1)
    return run_dirs
