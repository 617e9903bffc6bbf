"""Features of one recording, per channel and per bearing: the one definition used everywhere.

Training (:mod:`wearcast.dataset`), batch scoring and the API all call :func:`recording_features`
with a :class:`FeatureSpec` made from the run's rig (:class:`wearcast.rig.Rig`: sampling rate,
shaft speed, bearing geometry, envelope band), so one definition serves every rig. One real
FFT per channel feeds the spectrum bands, the defect-frequency lines and the envelope:

* time domain: rms, mean, std, peak, crest, kurtosis (Pearson, 3 for Gaussian noise),
  skewness, shape, impulse and clearance factors, on the samples as recorded (so ``rms`` and
  ``peak`` include the sensor's DC offset, as the public IMS tables do; ``std`` does not);
* spectrum: RMS (g) in frequency bands, after removing the mean, with no window so that the
  bands' squares add up to the variance (Parseval); RMS near 1, 2, 3 times each defect frequency;
* envelope: the band around the structural resonance is shifted to base band straight from
  the spectrum (the modulus of the analytic signal does not change under a frequency shift,
  so the short inverse FFT gives the Hilbert envelope); then the envelope's spectrum gives the
  amplitude at 1, 2, 3 times BPFO, BPFI, BSF, FTF, and for each defect a line-to-background ratio
  (``env_<defect>_snr``) that does not depend on the sensor's sensitivity.

A bearing with several channels (x and y in IMS test 1) gets each channel's features with a
``chK_`` prefix and, without prefix, their mean: models use the unprefixed ones, so a model
trained on one channel per bearing scores two-channel bearings and the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
import scipy.fft as sfft

from wearcast.config import Settings
from wearcast.formats import FORMATS, RecordingError
from wearcast.rig import DefectFrequencies, Rig

__all__ = [
    "FeatureSpec",
    "Spectra",
    "Analysis",
    "analyse",
    "bearing_features",
    "bearing_spectra",
    "channel_features",
    "recording_features",
    "TIME_FEATURES",
    "can_be_negative",
]

TIME_FEATURES = (
    "rms",
    "mean",
    "std",
    "peak",
    "crest",
    "kurtosis",
    "skewness",
    "shape",
    "impulse",
    "clearance",
)
# The only features that can be negative: every other one is an amplitude, a power or a ratio
# of them.
SIGNED_FEATURES = ("mean", "skewness")
DEFECTS = ("bpfo", "bpfi", "bsf", "ftf")
HARMONICS = (1, 2, 3)
_ENV_BACKGROUND_HZ = (5.0, 1000.0)


def can_be_negative(name: str) -> bool:
    """Whether wearcast's feature ``name`` (per bearing or ``chK_`` per channel) may be below
    zero; a name of another system's table may."""
    base = name.split("_", 1)[1] if name.startswith("ch") and name[2:3].isdigit() else name
    ours = base in TIME_FEATURES or base.startswith(("band_", "spec_", "env_"))
    return not ours or base in SIGNED_FEATURES


def _band_label(low: float, high: float) -> str:
    return f"band_{low:05.0f}_{high:05.0f}"


@dataclass(frozen=True)
class FeatureSpec:
    """Everything a feature depends on besides the samples."""

    sampling_rate_hz: float
    band_edges_hz: tuple[float, ...]
    envelope_band_hz: tuple[float, float]
    defects: DefectFrequencies
    tolerance: float

    @classmethod
    def from_settings(cls, settings: Settings, rig: Rig | None = None) -> FeatureSpec:
        """The features of recordings made on ``rig`` (default: the IMS rig of the settings):
        bands up to its Nyquist frequency, its envelope band, its defect frequencies."""
        rig = rig or FORMATS["ims"].defaults(settings)
        nyquist = rig.nyquist_hz
        if settings.band_scale == "linear":
            edges = np.arange(0.0, nyquist, settings.band_width_hz)
            edges = np.append(edges, nyquist)
        else:
            edges = np.geomspace(settings.log_band_low_hz, nyquist, settings.log_bands + 1)
            edges = np.insert(edges, 0, 0.0)
        defects = rig.geometry.defect_frequencies(rig.shaft_rpm / 60.0)
        _check_lines_shown(rig, defects, settings.defect_tolerance)
        return cls(
            sampling_rate_hz=rig.sampling_rate_hz,
            band_edges_hz=tuple(float(e) for e in edges),
            envelope_band_hz=tuple(rig.envelope_band_hz),
            defects=defects,
            tolerance=settings.defect_tolerance,
        )

    @cached_property
    def names(self) -> list[str]:
        """Per-channel feature names, in the column order of :func:`channel_features`."""
        edges = self.band_edges_hz
        bands = [_band_label(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        spec = [f"spec_{d}" for d in DEFECTS]
        env = ["env_rms", "env_kurtosis"]
        env += [f"env_{d}_{h}" for d in DEFECTS for h in HARMONICS]
        env += [f"env_{d}_snr" for d in DEFECTS]
        return [*TIME_FEATURES, *bands, *spec, *env]

    @lru_cache(maxsize=8)  # noqa: B019 - a handful of widths per frozen spec
    def columns(self, channels_per_bearing: int) -> list[str]:
        """Columns of :func:`recording_features`: bearing-level, then each channel's."""
        per = [f"ch{k + 1}_{n}" for k in range(channels_per_bearing) for n in self.names]
        return [*self.names, *per]


def _time_features(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=0)
    d = x - mean
    d2 = d * d
    m2 = d2.mean(axis=0)
    m3 = (d2 * d).mean(axis=0)
    m4 = (d2 * d2).mean(axis=0)
    absx = np.abs(x)
    rms = np.sqrt(m2 + mean * mean)
    peak = absx.max(axis=0)
    mean_abs = absx.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack(
            [
                rms,
                mean,
                np.sqrt(m2),
                peak,
                peak / rms,
                m4 / (m2 * m2),
                m3 / (m2 * np.sqrt(m2)),
                rms / mean_abs,
                peak / mean_abs,
                peak / np.sqrt(absx).mean(axis=0) ** 2,
            ],
            axis=1,
        )


def _check_lines_shown(rig: Rig, defects: DefectFrequencies, tolerance: float) -> None:
    """:class:`RecordingError` if the defect lines (every harmonic) lie beyond what the
    envelope spectrum shows (it reaches half the envelope band's width), or if a recording
    is shorter than one shaft revolution (no line of a slower bearing can be resolved)."""
    duration = rig.samples / rig.sampling_rate_hz
    if rig.shaft_rpm / 60.0 * duration < 1:
        raise RecordingError(
            f"at {rig.shaft_rpm:g} rpm one shaft revolution takes {60.0 / rig.shaft_rpm:.3g} s, "
            f"longer than the {duration:.3g} s a recording lasts: no defect line can be "
            "resolved; check the speed"
        )
    top = max(getattr(defects, d) for d in DEFECTS) * max(HARMONICS) * (1 + tolerance)
    low, high = rig.envelope_band_hz
    shown = min((high - low) / 2, rig.nyquist_hz)
    if top >= shown:
        raise RecordingError(
            f"at {rig.shaft_rpm:g} rpm the bearing's defect lines reach {top:.0f} Hz (harmonics "
            f"up to x{max(HARMONICS)}), beyond the {shown:.0f} Hz the envelope spectrum of "
            f"the {low:g}-{high:g} Hz band shows: check the speed, or give a wider "
            "envelope_band_hz in the run's run.json"
        )


@lru_cache(maxsize=16)
def _layout(spec: FeatureSpec, n: int) -> dict[str, np.ndarray | int]:
    """Bin indices that depend only on the spec and the recording length (cached)."""
    step = spec.sampling_rate_hz / n  # spectral resolution, Hz
    bins = n // 2 + 1
    edges = np.clip(np.ceil(np.asarray(spec.band_edges_hz) / step).astype(int), 0, bins)
    edges[-1] = bins
    lines = np.array(
        [h * getattr(spec.defects, d) for d in DEFECTS for h in HARMONICS], dtype=float
    )
    half = np.maximum(spec.tolerance * lines, step)
    lo = np.maximum(np.ceil((lines - half) / step).astype(int), 1)
    hi = np.floor((lines + half) / step).astype(int) + 1
    env_lo = int(np.ceil(spec.envelope_band_hz[0] / step))
    env_hi = min(int(np.floor(spec.envelope_band_hz[1] / step)) + 1, bins)
    return {
        "edges": edges,
        "line_lo": lo,
        "line_hi": hi,
        "env_lo": env_lo,
        "env_hi": env_hi,
        "env_m": sfft.next_fast_len(env_hi - env_lo),
        "bg_lo": int(_ENV_BACKGROUND_HZ[0] / step),
        "bg_hi": int(_ENV_BACKGROUND_HZ[1] / step),
    }


def _cumulative(power: np.ndarray) -> np.ndarray:
    return np.vstack([np.zeros((1, power.shape[1])), np.cumsum(power, axis=0)])


def _spectra(x: np.ndarray, mean: np.ndarray, lay: dict) -> tuple[np.ndarray, ...]:
    """The FFTs every spectral feature and the dashboard's plots come from, per channel:
    one-sided power per bin (adding up to the variance), the envelope, and the envelope's
    power per bin (same resolution)."""
    n = x.shape[0]
    # Single precision for the spectra: twice as fast, and far finer than the 1 mg samples.
    spectrum = sfft.rfft((x - mean).astype(np.float32), axis=0)
    power = (spectrum.real**2 + spectrum.imag**2) * (2.0 / n**2)
    power[0] = 0.0
    if n % 2 == 0:
        power[-1] /= 2.0
    # Envelope: shift the resonance band to base band, short inverse FFT, modulus.
    lo, hi, m = lay["env_lo"], lay["env_hi"], lay["env_m"]
    baseband = np.zeros((m, x.shape[1]), dtype=np.complex64)
    baseband[: hi - lo] = spectrum[lo:hi]
    analytic = sfft.ifft(baseband, axis=0, overwrite_x=True)
    envelope = np.sqrt(analytic.real**2 + analytic.imag**2) * (2.0 * m / n)
    env_spec = sfft.rfft(envelope - envelope.mean(axis=0), axis=0)
    env_power = (env_spec.real**2 + env_spec.imag**2) * (2.0 / m**2)  # resolution as above
    env_power[0] = 0.0
    return power, envelope, env_power


@dataclass(frozen=True)
class Analysis:
    """A recording's time statistics and FFTs per channel (:func:`analyse`): what its features
    and the spectra the dashboard keeps both come from, so a served recording is transformed
    once."""

    spec: FeatureSpec
    samples: int
    time: np.ndarray  # (channels, time statistics)
    power: np.ndarray  # (bins, channels)
    envelope: np.ndarray  # (envelope samples, channels)
    env_power: np.ndarray  # (bins, channels), same resolution as power
    layout: dict


def analyse(data: np.ndarray, spec: FeatureSpec) -> Analysis:
    x = np.asarray(data, dtype=np.float64)
    n = x.shape[0]
    layout = _layout(spec, n)
    time = _time_features(x)
    power, envelope, env_power = _spectra(x, time[:, 1], layout)
    return Analysis(spec, n, time, power, envelope, env_power, layout)


def channel_features(data: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Features of every channel: an array (channels, len(spec.names))."""
    return _channel_features(analyse(data, spec))


def _channel_features(analysis: Analysis) -> np.ndarray:
    lay, time, power = analysis.layout, analysis.time, analysis.power
    envelope, env_power = analysis.envelope, analysis.env_power
    channels = time.shape[0]
    cum = _cumulative(power)
    edges = lay["edges"]
    bands = np.sqrt(np.maximum(cum[edges[1:]] - cum[edges[:-1]], 0.0)).T
    lines = np.maximum(cum[lay["line_hi"]] - cum[lay["line_lo"]], 0.0)  # (12, channels)
    per_defect = len(HARMONICS)
    spec_lines = np.sqrt(lines.reshape(len(DEFECTS), per_defect, channels).sum(axis=1)).T

    env_mean = envelope.mean(axis=0)
    env_d = envelope - env_mean
    env_d2 = env_d * env_d
    env_m2 = env_d2.mean(axis=0)
    env_kurt = (env_d2 * env_d2).mean(axis=0) / np.where(env_m2 > 0, env_m2 * env_m2, np.inf)
    background = np.median(env_power[lay["bg_lo"] : lay["bg_hi"]], axis=0)
    env_cum = _cumulative(env_power)
    env_line_power = np.maximum(env_cum[lay["line_hi"]] - env_cum[lay["line_lo"]], 0.0)
    widths = (lay["line_hi"] - lay["line_lo"]).reshape(len(DEFECTS), per_defect).sum(axis=1)
    grouped = env_line_power.reshape(len(DEFECTS), per_defect, channels).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        env_snr = grouped / (background * widths[:, None])

    env = np.column_stack(
        [np.sqrt(env_m2 + env_mean**2), env_kurt, np.sqrt(env_line_power).T, env_snr.T]
    )
    return np.hstack([time, bands, spec_lines, env])


@dataclass(frozen=True)
class Spectra:
    """A bearing's spectrum and envelope spectrum, as RMS (g) per line of width ``*_step_hz``
    starting at 0 Hz: power of the bearing's channels averaged, as its features are."""

    spectrum_step_hz: float
    spectrum: list[float]
    envelope_step_hz: float
    envelope: list[float]
    # The bearing's defect frequencies (Hz) for the rig and speed it was recorded at; empty in
    # rows kept before they were stored.
    defects: dict[str, float] = field(default_factory=dict)


def bearing_spectra(
    analysis: Analysis,
    channel_map: dict[int, list[int]],
    *,
    spectrum_step_hz: float = 10.0,
    envelope_max_hz: float = 1000.0,
) -> dict[int, Spectra]:
    """Each bearing's spectra from the features' own FFTs, small enough to keep: the spectrum
    summed into lines of about ``spectrum_step_hz`` (power adds, so the lines still add up to
    the variance), the envelope spectrum at full resolution up to ``envelope_max_hz`` (the
    defect frequencies and their harmonics lie below it)."""
    spec, power, env_power = analysis.spec, analysis.power, analysis.env_power
    step = spec.sampling_rate_hz / analysis.samples
    group = max(1, round(spectrum_step_hz / step))
    usable = power.shape[0] // group * group
    lines = power[:usable].reshape(-1, group, power.shape[1]).sum(axis=1)
    env_lines = env_power[: int(envelope_max_hz / step) + 1]

    def rms(p: np.ndarray) -> list[float]:
        return np.sqrt(p).tolist()

    return {
        bearing: Spectra(
            group * step,
            rms(lines[:, chs].mean(axis=1)),
            step,
            rms(env_lines[:, chs].mean(axis=1)),
            spec.defects.as_dict(),
        )
        for bearing, chs in channel_map.items()
    }


def recording_features(
    data: np.ndarray, channel_map: dict[int, list[int]], spec: FeatureSpec
) -> tuple[list[str], np.ndarray]:
    """Per-bearing features of one recording.

    Returns the column names and a float32 array (bearings, columns): the mean over the
    bearing's channels (unprefixed names), then each channel's own (``ch1_``, ``ch2_``...),
    bearings in the order of ``channel_map``. float32 is the precision the training table
    stores, so a recording sent to the API scores exactly as the same file does in a batch.
    """
    return bearing_features(analyse(data, spec), channel_map)


def bearing_features(
    analysis: Analysis, channel_map: dict[int, list[int]]
) -> tuple[list[str], np.ndarray]:
    """:func:`recording_features` of an analysed recording."""
    spec = analysis.spec
    per_channel = _channel_features(analysis)
    columns = spec.columns(max(len(chs) for chs in channel_map.values()))
    rows = np.full((len(channel_map), len(columns)), np.nan, dtype=np.float32)
    f = len(spec.names)
    for i, chs in enumerate(channel_map.values()):
        rows[i, :f] = per_channel[chs].mean(axis=0)
        rows[i, f : f * (len(chs) + 1)] = per_channel[chs].ravel()
    return columns, rows
