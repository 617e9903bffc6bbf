"""Each feature family on signals with known answers, and on the real recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wearcast.config import Settings
from wearcast.features import FeatureSpec, channel_features, recording_features

FS, N = 20_000.0, 20_480


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return FeatureSpec.from_settings(Settings())


def _value(spec: FeatureSpec, features: np.ndarray, name: str, channel: int = 0) -> float:
    return float(features[channel, spec.names.index(name)])


def test_a_pure_tone_lands_in_its_band_with_its_energy(spec):
    t = np.arange(N) / FS
    amplitude, freq = 0.3, 1234.0
    x = (amplitude * np.sin(2 * np.pi * freq * t) + 0.05)[:, None]
    f = channel_features(x, spec)
    bands = [n for n in spec.names if n.startswith("band_")]
    values = np.array([_value(spec, f, b) for b in bands])
    assert bands[int(np.argmax(values))] == "band_01200_01300"
    assert values.max() == pytest.approx(amplitude / np.sqrt(2), rel=0.01)
    # Parseval: band energies add up to the variance (the DC offset is not in any band).
    assert (values**2).sum() == pytest.approx(x.var(), rel=1e-4)


def test_log_bands_cover_the_spectrum(tmp_path):
    spec = FeatureSpec.from_settings(Settings(home=tmp_path, band_scale="log", log_bands=16))
    x = np.random.default_rng(0).normal(0, 0.1, (N, 1))
    f = channel_features(x, spec)
    bands = np.array([_value(spec, f, n) for n in spec.names if n.startswith("band_")])
    assert len(bands) == 17
    assert (bands**2).sum() == pytest.approx(x.var(), rel=1e-4)


def test_time_domain_statistics_of_a_sine(spec):
    t = np.arange(N) / FS
    x = np.sin(2 * np.pi * (50 * FS / N) * t)[:, None]  # exactly 50 periods
    f = channel_features(x, spec)
    assert _value(spec, f, "rms") == pytest.approx(1 / np.sqrt(2), rel=1e-6)
    assert _value(spec, f, "crest") == pytest.approx(np.sqrt(2), rel=1e-3)
    assert _value(spec, f, "kurtosis") == pytest.approx(1.5, rel=1e-3)
    assert _value(spec, f, "skewness") == pytest.approx(0.0, abs=1e-6)
    assert _value(spec, f, "shape") == pytest.approx(np.pi / (2 * np.sqrt(2)), rel=1e-3)
    assert _value(spec, f, "impulse") == pytest.approx(np.pi / 2, rel=1e-3)


def _ringing_impacts(rate_hz: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(N) / FS
    train = np.zeros(N)
    train[(np.arange(0, N / FS, 1 / rate_hz) * FS).astype(int)] = 1.0
    ring = np.exp(-0.05 * 2 * np.pi * 4000 * t) * np.sin(2 * np.pi * 4000 * t)
    x = np.real(np.fft.ifft(np.fft.fft(train) * np.fft.fft(ring)))
    return (0.5 * x + rng.normal(0, 0.05, N))[:, None]


def test_impacts_at_bpfo_light_up_the_bpfo_envelope_feature_only(spec):
    f = channel_features(_ringing_impacts(spec.defects.bpfo), spec)
    assert _value(spec, f, "env_bpfo_snr") > 20
    assert _value(spec, f, "env_bpfi_snr") < 3
    assert _value(spec, f, "env_bsf_snr") < 3
    assert _value(spec, f, "env_bpfo_1") > 5 * _value(spec, f, "env_bpfi_1")
    g = channel_features(_ringing_impacts(spec.defects.bpfi), spec)
    assert _value(spec, g, "env_bpfi_snr") > 20 and _value(spec, g, "env_bpfo_snr") < 3


def test_noise_lights_up_no_defect(spec):
    x = np.random.default_rng(1).normal(0, 0.1, (N, 2))
    f = channel_features(x, spec)
    for d in ("bpfo", "bpfi", "bsf"):
        assert _value(spec, f, f"env_{d}_snr") < 3


def test_two_channel_bearings_keep_both_channels_and_their_mean(spec):
    rng = np.random.default_rng(2)
    x = rng.normal(0, [0.1, 0.2, 0.1, 0.1], (N, 4))
    cols, rows = recording_features(x, {1: [0, 1], 2: [2, 3]}, spec)
    std, ch1, ch2 = cols.index("std"), cols.index("ch1_std"), cols.index("ch2_std")
    assert rows[0, ch1] == pytest.approx(0.1, rel=0.05) and rows[0, ch2] == pytest.approx(
        0.2, rel=0.05
    )
    assert rows[0, std] == pytest.approx((rows[0, ch1] + rows[0, ch2]) / 2)
    cols1, rows1 = recording_features(x, {b: [b - 1] for b in range(1, 5)}, spec)
    assert "ch2_std" not in cols1 and rows1.shape == (4, 2 * len(spec.names))


@pytest.mark.real_data
def test_features_of_the_real_recordings_match_the_reference_tables(
    ims_dir: Path, real_test1_dir: Path, spec
):
    from wearcast.ingest import parse_recording

    time_ref = pd.read_csv(ims_dir / "reference" / "test1_first25_time_features.csv")
    spec_ref = pd.read_csv(ims_dir / "reference" / "test1_first25_spectral_features.csv")
    pairs = {"crest": "crest_factor", "shape": "shape_factor", "impulse": "impulse_factor"}
    for i, row in time_ref.iterrows():
        f = channel_features(parse_recording((real_test1_dir / row.filename).read_bytes()), spec)
        for ch in range(8):
            prefix = f"Bearing{ch // 2 + 1}_ch{ch % 2 + 1}_"
            assert _value(spec, f, "rms", ch) == pytest.approx(row[prefix + "rms"], rel=1e-4)
            assert _value(spec, f, "kurtosis", ch) == pytest.approx(
                row[prefix + "kurt"] + 3, rel=1e-4
            )
            for ours, theirs in pairs.items():
                # The spectral reference table is rounded to 6 significant digits.
                assert _value(spec, f, ours, ch) == pytest.approx(
                    spec_ref.loc[i, prefix + theirs], rel=1e-4
                )
