"""The choreography as a PNG: Graphviz's ``dot`` when it is installed, else matplotlib.

Graphviz lays the graph out best; matplotlib (the dev extra) needs no system package, so
the picture can be drawn anywhere the tests run. The matplotlib drawing is plain: the
service that starts the saga in the middle, the others on a circle around it, boxes and
curved labelled arrows.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

from saga_runtime.system import System
from sagactl.graph.model import Arrow, Choreography, choreography, legend
from sagactl.graph.text import SERVICE_FILL, STARTER_FILL, UNDO_COLOUR, dot

__all__ = [
    "NoRenderer",
    "Renderer",
    "available_renderer",
    "has_graphviz",
    "has_matplotlib",
    "write_png",
]

Renderer = Literal["graphviz", "matplotlib"]
LINE = "#5b6b82"


class NoRenderer(RuntimeError):
    """Neither Graphviz's ``dot`` nor matplotlib is installed (or the one asked for is not)."""


def available_renderer(wanted: str = "auto") -> Renderer:
    """``wanted`` if it is installed ("auto": Graphviz, else matplotlib)."""
    have_dot, have_mpl = has_graphviz(), has_matplotlib()
    if wanted in ("auto", "graphviz") and have_dot:
        return "graphviz"
    if wanted in ("auto", "matplotlib") and have_mpl:
        return "matplotlib"
    if wanted == "graphviz":
        raise NoRenderer("Graphviz's dot is not installed")
    if wanted == "matplotlib":
        raise NoRenderer("matplotlib is not installed")
    raise NoRenderer(
        "no renderer for the picture: neither Graphviz's dot nor matplotlib is installed"
    )


def has_graphviz() -> bool:
    return shutil.which("dot") is not None


def has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_png(system: System, path: Path, renderer: str = "auto") -> Renderer:
    """Draw ``system``'s choreography into the PNG file ``path``; returns the renderer used."""
    chosen = available_renderer(renderer)
    if chosen == "graphviz":
        subprocess.run(["dot", "-Tpng", "-o", str(path)], input=dot(system), text=True, check=True)
    else:
        _draw(choreography(system), path)
    return chosen


# --- matplotlib -------------------------------------------------------------------------------

RADIUS = 7.0
STRETCH = 1.35  # labels are wider than tall: an ellipse gives them room
BOX_HEIGHT = 0.7
BEND = {False: 0.2, True: 0.42}  # how far an arrow curves: compensations curve further out
# Where along a pair of services the labels of its arrows sit (one, two or three arrows),
# so that the labels of the way there and the way back do not cover each other.
SPREAD = {1: (0.5,), 2: (0.35, 0.65), 3: (0.25, 0.5, 0.75)}


def _draw(drawn: Choreography, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    where = _places(drawn)
    fig, ax = plt.subplots(figsize=(16, 13))
    boxes: dict[str, Any] = {}
    for name, (x, y) in where.items():
        width = max(1.8, 0.2 * len(name) + 0.6)
        starter = name == drawn.starter
        box = FancyBboxPatch(
            (x - width / 2, y - BOX_HEIGHT / 2),
            width,
            BOX_HEIGHT,
            boxstyle="round,pad=0.08,rounding_size=0.2",
            facecolor=STARTER_FILL if starter else SERVICE_FILL,
            edgecolor="#2c4f7c" if starter else LINE,
            linewidth=2.2 if starter else 1.2,
            zorder=3,
        )
        ax.add_patch(box)
        boxes[name] = box
        ax.text(x, y, name, ha="center", va="center", fontsize=15, weight="bold", zorder=4)
    for arrow, along in _label_positions(drawn.arrows):
        start, end = where[arrow.producer], where[arrow.consumer]
        colour = UNDO_COLOUR if arrow.undo else LINE
        ax.add_patch(
            FancyArrowPatch(
                start,
                end,
                connectionstyle=f"arc3,rad={BEND[arrow.undo]}",
                arrowstyle="-|>,head_length=0.8,head_width=0.4",
                mutation_scale=14,
                linestyle="--" if arrow.undo else "-",
                color=colour,
                linewidth=1.4,
                patchA=boxes[arrow.producer],
                patchB=boxes[arrow.consumer],
                zorder=2,
            )
        )
        x, y = _on_arc(start, end, BEND[arrow.undo], along)
        ax.text(
            x,
            y,
            "\n".join(arrow.labels),
            ha="center",
            va="center",
            fontsize=11,
            color=colour,
            linespacing=1.3,
            bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": colour},
            zorder=5,
        )
    xs = [x for x, _ in where.values()]
    ys = [y for _, y in where.values()]
    ax.text(0, min(ys) - 1.4, legend(), ha="center", va="center", fontsize=13, color="#333333")
    ax.set_xlim(min(xs) - 2.5, max(xs) + 2.5)
    ax.set_ylim(min(ys) - 1.8, max(ys) + 0.8)
    ax.set_aspect("equal")
    ax.axis("off")
    try:
        fig.savefig(path, format="png", dpi=80, bbox_inches="tight", facecolor="white")
    finally:
        plt.close(fig)


def _places(drawn: Choreography) -> dict[str, tuple[float, float]]:
    """The starter in the middle (every saga goes through it), the rest on a circle from
    the top, clockwise; without a starter, everyone on the circle."""
    around = [n for n in drawn.services if n != drawn.starter]
    where: dict[str, tuple[float, float]] = {}
    if drawn.starter is not None:
        where[drawn.starter] = (0.0, 0.0)
    step = 2 * math.pi / max(len(around), 1)
    for i, name in enumerate(around):
        # Half a step off the vertical: no chord is level, so the labels of a pair of
        # services, spread along it, are apart in both directions.
        angle = math.pi / 2 - step / 2 - step * i
        where[name] = (STRETCH * RADIUS * math.cos(angle), RADIUS * math.sin(angle))
    return where


def _label_positions(arrows: tuple[Arrow, ...]) -> list[tuple[Arrow, float]]:
    """Each arrow with the fraction of the way from its producer where its label sits."""
    pairs: dict[frozenset[str], list[Arrow]] = {}
    for arrow in arrows:
        pairs.setdefault(frozenset((arrow.producer, arrow.consumer)), []).append(arrow)
    placed: list[tuple[Arrow, float]] = []
    for group in pairs.values():
        first = group[0].producer  # fractions count from one end of the pair
        for arrow, along in zip(group, SPREAD.get(len(group), SPREAD[3]), strict=False):
            placed.append((arrow, along if arrow.producer == first else 1 - along))
    return placed


def _on_arc(
    start: tuple[float, float], end: tuple[float, float], bend: float, t: float
) -> tuple[float, float]:
    """The point at ``t`` of matplotlib's ``arc3`` curve: a quadratic Bézier whose control
    point is the chord's middle moved by ``bend`` * (dy, -dx)."""
    (x1, y1), (x2, y2) = start, end
    cx = (x1 + x2) / 2 + bend * (y2 - y1)
    cy = (y1 + y2) / 2 - bend * (x2 - x1)
    a, b, c = (1 - t) ** 2, 2 * (1 - t) * t, t**2
    return a * x1 + b * cx + c * x2, a * y1 + b * cy + c * y2
