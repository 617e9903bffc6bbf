"""A bearing's healthy baseline: the one definition, used by training, batch scoring and the API.

A bearing's baseline is the per-feature median of its first ``baseline_recordings`` recordings
**by time** (missing values ignored), so it does not depend on the order recordings arrived
in, nor on which API worker served them. Training compares every row of a run with that whole
baseline; scoring (`wearcast predict`, the API, one recording or a batch) compares a recording
with the samples up to its own time, so a folder cut at any recording scores it the same, and
the answer says how many samples its baseline has.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

__all__ = [
    "BASELINE_PREFIX",
    "add_baselines",
    "baseline_median",
    "growing_baselines",
    "model_inputs",
    "sample_medians",
]

BASELINE_PREFIX = "baseline_"


def baseline_median(samples: np.ndarray) -> np.ndarray:
    """Column medians of a bearing's baseline recordings (rows), ignoring missing values;
    all-missing columns stay NaN."""
    samples = np.asarray(samples, dtype=np.float64)
    if not np.isnan(samples).any():
        return np.median(samples, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(samples, axis=0)


def sample_medians(samples: list[dict]) -> dict[str, float]:
    """Per-feature medians of baseline samples stored as dicts (None: missing)."""
    columns = sorted({f for sample in samples for f in sample})
    matrix = [[np.nan if s.get(f) is None else s[f] for f in columns] for s in samples]
    medians = baseline_median(matrix).tolist() if samples else []
    return dict(zip(columns, medians, strict=True))


def add_baselines(
    frame: pd.DataFrame,
    columns: list[str],
    recordings: int,
    keys: tuple[str, ...] = ("run", "bearing"),
) -> pd.DataFrame:
    """Add ``baseline_<col>``: the median of each bearing's first ``recordings`` recordings
    by time (a bearing is identified by ``keys``)."""
    keys = list(keys)
    ordered = frame.sort_values("timestamp", kind="stable")
    first = ordered.groupby(keys, sort=False).head(recordings)
    medians = first.groupby(keys)[columns].median()
    medians.columns = [BASELINE_PREFIX + c for c in columns]
    return frame.join(medians, on=keys)


def growing_baselines(table: pd.DataFrame, columns: list[str], recordings: int) -> pd.DataFrame:
    """``baseline_<col>`` of each recording: the median of its bearing's first recordings up to
    it (at most ``recordings``), as the API builds it, so a folder cut at any recording scores
    that recording the same."""
    values = table[columns].to_numpy(dtype=float)
    out = np.full_like(values, np.nan)
    for rows in table.groupby(["run", "bearing"], sort=False).indices.values():
        rows = np.sort(rows)  # the table is in time order within a bearing
        for j, row in enumerate(rows):
            first = rows[: min(j + 1, recordings)]
            if j < recordings:
                out[row] = baseline_median(values[first])
            else:
                out[row] = out[rows[recordings - 1]]
    baselines = pd.DataFrame(out, index=table.index, columns=[BASELINE_PREFIX + c for c in columns])
    return pd.concat([table, baselines], axis=1)


def model_inputs(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The model's input columns: the features and their baselines."""
    return frame[columns + [BASELINE_PREFIX + c for c in columns]]
