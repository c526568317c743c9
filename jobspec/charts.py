"""The loss chart of a Markdown report: a Mermaid ``xychart-beta`` that a reviewer can read on
GitHub in light and dark mode alike.

Mermaid's default theme draws an xychart's line in pale lavender, barely visible on white, and
xychart draws no legend. So the chart sets its own colours with an init directive (a white card
with dark text in either theme, and lines from the Okabe-Ito palette, each at least 3:1 against
white), draws the mean loss of each epoch beside the noisy per-step loss (and the validation loss
where the backend measured one), and a caption names the lines by colour.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from .results import LossPoint

# (colour name for the caption, hex) per line, in the order the lines are drawn.
STEP_COLOUR = ("blue", "#0072B2")
EPOCH_COLOUR = ("vermillion", "#D55E00")
VALIDATION_COLOUR = ("green", "#009E73")
TEXT, AXES = "#24292f", "#57606a"  # GitHub's light-theme text and muted grey
MAX_POINTS = 200  # Mermaid draws every point; past a few hundred, an even sample


def init_directive(colours: list[str]) -> str:
    variables = {"backgroundColor": "#ffffff", "titleColor": TEXT,
                 "xAxisLabelColor": TEXT, "xAxisTitleColor": TEXT, "xAxisTickColor": AXES,
                 "xAxisLineColor": AXES, "yAxisLabelColor": TEXT, "yAxisTitleColor": TEXT,
                 "yAxisTickColor": AXES, "yAxisLineColor": AXES,
                 "plotColorPalette": ", ".join(colours)}
    init = {"theme": "base", "themeVariables": {"xyChart": variables}}
    return f"%%{{init: {json.dumps(init, separators=(', ', ': '))}}}%%"


def epoch_means(curve: Sequence[LossPoint]) -> dict[int, float]:
    """The mean of each epoch's per-step losses."""
    sums: dict[int, list[float]] = {}
    for point in curve:
        sums.setdefault(point.epoch, []).append(point.mean_loss)
    return {epoch: sum(losses) / len(losses) for epoch, losses in sums.items()}


def _by_epoch(validation: Sequence[LossPoint]) -> dict[int, float]:
    """The validation loss measured last in each epoch."""
    found: dict[int, float] = {}
    for point in sorted(validation, key=lambda p: (p.epoch, p.step)):
        found[point.epoch] = point.mean_loss
    return found


def _held(values: dict[int, float], epoch: int) -> float:
    """The value of ``epoch``, else of the latest epoch before it, else of the first one."""
    earlier = [e for e in values if e <= epoch]
    return values[max(earlier)] if earlier else values[min(values)]


def _sample(curve: Sequence[LossPoint]) -> list[LossPoint]:
    stride = max(1, math.ceil(len(curve) / MAX_POINTS))
    points = list(curve[::stride])
    if points[-1] is not curve[-1]:
        points.append(curve[-1])
    return points


def _numbers(values: list[float]) -> str:
    return ", ".join(format(v, ".4g") for v in values)


def loss_chart(curve: Sequence[LossPoint],
               validation: Sequence[LossPoint] = ()) -> list[str]:
    """The chart's Markdown lines, and its caption."""
    if not curve:
        return ["_No loss snapshots recorded._"]
    points = _sample(curve)
    means = epoch_means(curve)
    lines = [("loss at each step", STEP_COLOUR, [p.mean_loss for p in points]),
             ("mean loss of each epoch", EPOCH_COLOUR, [means[p.epoch] for p in points])]
    if validation:
        held = _by_epoch(validation)
        lines.append(("validation loss at the end of each epoch, drawn across its steps",
                      VALIDATION_COLOUR, [_held(held, p.epoch) for p in points]))
    top = max(max(values) for _, _, values in lines)
    chart = ["```mermaid", init_directive([colour for _, (_, colour), _ in lines]),
             "xychart-beta", '    title "Training loss"',
             f'    x-axis "step" [{", ".join(str(p.step) for p in points)}]',
             f'    y-axis "mean loss" 0 --> {top * 1.05 if top > 0 else 1:.4g}']
    chart += [f"    line [{_numbers(values)}]" for _, _, values in lines]
    chart.append("```")
    sampled = ("" if len(points) == len(curve)
               else f" ({len(points)} of {len(curve)} steps shown, evenly spaced)")
    caption = "; ".join(f"**{name}**: {what}" for what, (name, _), _ in lines)
    return chart + ["", f"<sub>Lines: {caption}{sampled}.</sub>"]
