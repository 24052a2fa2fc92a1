"""Bar charts drawn by the server as SVG: no chart library, no script."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 720, 220, 56, 28, 12


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int
    show_label: bool


@dataclass(frozen=True, slots=True)
class Chart:
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[float, int], ...]  # (y, value) of the horizontal grid lines
    width: int = WIDTH
    height: int = HEIGHT
    left: int = PAD_LEFT
    bottom: float = HEIGHT - PAD_BOTTOM


def _nice_top(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above value (at least 1)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def bars(rows: Sequence[tuple[str, int]]) -> Chart:
    """A chart of (label, value) rows on one scale from 0; labels thinned to stay legible."""
    top = _nice_top(max((v for _, v in rows), default=0))
    plot_w = WIDTH - PAD_LEFT - 8
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    n = max(len(rows), 1)
    slot = plot_w / n
    every = max(1, round(n / 8))
    out = []
    # A few bars stay bars: a single day is not drawn as a wall.
    width = min(slot * 0.7, 48.0)
    for i, (label, value) in enumerate(rows):
        h = plot_h * value / top if top else 0.0
        out.append(
            Bar(
                x=PAD_LEFT + i * slot + (slot - width) / 2,
                y=PAD_TOP + plot_h - h,
                width=width,
                height=h,
                label=label,
                value=value,
                show_label=i % every == 0,
            )
        )
    ticks = tuple((PAD_TOP + plot_h * (1 - f), round(top * f)) for f in (0.0, 0.5, 1.0))
    return Chart(tuple(out), ticks)
