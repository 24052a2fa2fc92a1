"""Terminal bar charts: a trend readable in a terminal, without a plotting library."""

from __future__ import annotations

from collections.abc import Sequence

_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(value: int, top: int, width: int) -> str:
    """A bar of `value` on a scale where `top` fills `width` cells, in eighths of a cell."""
    if top <= 0 or value <= 0:
        return ""
    eighths = max(round(value * width * 8 / top), 1)  # a non-zero value is never invisible
    full, rest = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


def bars(rows: Sequence[tuple[str, int]], width: int = 40) -> list[str]:
    """One line per (label, value): the label, the bar and the value, bars on one scale."""
    if not rows:
        return []
    top = max(v for _, v in rows)
    label_w = max(len(label) for label, _ in rows)
    value_w = max(len(str(v)) for _, v in rows)
    return [
        f"{label:<{label_w}}  {bar(v, top, width):<{width}}  {v:>{value_w}}" for label, v in rows
    ]
