"""The dashboard's charts: SVG drawn on the server with matplotlib, so there is no JavaScript
library to ship and nothing to fetch from a CDN (the machines have no internet).

matplotlib is imported on the first chart drawn, not with the API: a server nobody looks at
should not load it. Figures are made without pyplot (no global state), so pages drawn in
parallel threads do not share one.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime

from wearcast.api.schemas import BearingHistory
from wearcast.features import Spectra

__all__ = ["STATE_COLORS", "trajectory_svg", "spectra_svg"]

STATE_COLORS = {"ok": "#2e7d32", "watch": "#ef8f00", "alarm": "#c62828"}
DEFECT_COLORS = {"bpfo": "#1565c0", "bpfi": "#6a1b9a", "bsf": "#00838f", "ftf": "#8d6e63"}


def _figure(height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(9, height), layout="constrained")


def _data_uri(figure) -> str:
    """The figure as an SVG data URI: an <img> scales it with the page, and its ids and styles
    cannot clash with the page's or another chart's."""
    import matplotlib

    buffer = io.BytesIO()
    # Text as text, not paths: a third of the size, and readable by screen readers and tests.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "wearcast"}):
        figure.savefig(buffer, format="svg")
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def trajectory_svg(history: BearingHistory, wear_threshold: float) -> str:
    """The bearing's health indicator (or wear, for a model without one) over time, its alarm
    threshold, and its alarm episodes shaded by the highest state they reached."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    points = history.predictions
    times = [p.timestamp for p in points]
    health = [p.health for p in points]
    use_health = any(h is not None for h in health)
    values = health if use_health else [p.wear for p in points]
    threshold = history.health_threshold if use_health else wear_threshold
    fig = _figure(3.4)
    ax = fig.add_subplot()
    for episode in history.episodes:
        end: datetime = episode.end or times[-1]
        ax.axvspan(
            episode.start,
            end,
            color=STATE_COLORS[episode.level],
            alpha=0.15,
            lw=0,
            label=f"{episode.level} episode",
        )
        if episode.raised is not None:
            ax.axvline(episode.raised, color=STATE_COLORS["alarm"], lw=1, ls=":")
    ax.plot(times, [float("nan") if v is None else v for v in values], color="#263238", lw=1.4)
    ax.scatter(
        times,
        [float("nan") if v is None else v for v in values],
        c=[STATE_COLORS.get(p.alarm_state or ("alarm" if p.alarm else "ok")) for p in points],
        s=10,
        zorder=3,
    )
    if threshold is not None:
        ax.axhline(threshold, color=STATE_COLORS["alarm"], ls="--", lw=1.2, label="threshold")
    ax.set_ylabel("health indicator" if use_health else "wear (0 new, 1 failed)")
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # one legend entry per episode level
    if unique:
        ax.legend(unique.values(), unique.keys(), loc="upper left", fontsize=8)
    return _data_uri(fig)


def spectra_svg(spectra: Spectra, defects: dict[str, float]) -> str:
    """Spectrum and envelope spectrum, with 1x, 2x and 3x each defect frequency marked."""
    fig = _figure(5.6)
    top, bottom = fig.subplots(2, 1)
    panels = (
        (top, spectra.spectrum, spectra.spectrum_step_hz, "spectrum"),
        (bottom, spectra.envelope, spectra.envelope_step_hz, "envelope spectrum"),
    )
    for ax, values, step, title in panels:
        freqs = [i * step for i in range(len(values))]
        ax.plot(freqs, values, color="#263238", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlim(0, freqs[-1])
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_ylabel(f"g RMS per {step:.3g} Hz")
        ax.grid(alpha=0.3)
        for name, hz in defects.items():
            for harmonic in (1, 2, 3):
                if harmonic * hz <= freqs[-1]:
                    ax.axvline(
                        harmonic * hz,
                        color=DEFECT_COLORS[name],
                        ls="--" if harmonic == 1 else ":",
                        lw=1,
                        label=f"{name.upper()} {hz:.1f} Hz" if harmonic == 1 else None,
                    )
    bottom.set_xlabel("frequency (Hz)")
    bottom.legend(loc="upper right", fontsize=8, ncols=4)
    return _data_uri(fig)
