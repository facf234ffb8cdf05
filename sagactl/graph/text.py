"""The choreography as text: Mermaid (GitHub renders it) and Graphviz dot."""

from __future__ import annotations

from saga_runtime.system import System
from sagactl.graph.model import Arrow, choreography

__all__ = ["dot", "mermaid"]

UNDO_COLOUR = "#c0392b"
STARTER_FILL = "#d6e4f5"
SERVICE_FILL = "#f4f6fa"


def mermaid(system: System) -> str:
    """A ``flowchart LR``: one node per service, one arrow per subscription labelled with
    its events (compensations on a dashed arrow of their own)."""
    drawn = choreography(system)
    lines = ["flowchart LR"]
    lines += [f'    {_id(name)}("{name}")' for name in drawn.services]
    lines += [_mermaid_arrow(arrow) for arrow in drawn.arrows]
    lines += [
        f"    classDef service fill:{SERVICE_FILL},stroke:#5b6b82",
        f"    classDef starter fill:{STARTER_FILL},stroke:#2c4f7c,stroke-width:2px",
    ]
    plain = [_id(n) for n in drawn.services if n != drawn.starter]
    if plain:
        lines.append(f"    class {','.join(plain)} service")
    if drawn.starter is not None:
        lines.append(f"    class {_id(drawn.starter)} starter")
    undo = [str(i) for i, arrow in enumerate(drawn.arrows) if arrow.undo]
    if undo:
        lines.append(f"    linkStyle {','.join(undo)} stroke:{UNDO_COLOUR}")
    return "\n".join(lines) + "\n"


def dot(system: System) -> str:
    """The same graph in Graphviz's dot language (``dot -Tpng`` draws it)."""
    drawn = choreography(system)
    lines = [
        "digraph choreography {",
        "    rankdir=LR;",
        '    node [shape=box, style="rounded,filled", fontname="Helvetica", '
        f'fillcolor="{SERVICE_FILL}", color="#5b6b82"];',
        '    edge [fontname="Helvetica", fontsize=10, color="#5b6b82"];',
    ]
    for name in drawn.services:
        extra = (
            f', fillcolor="{STARTER_FILL}", color="#2c4f7c", penwidth=2'
            if name == drawn.starter
            else ""
        )
        lines.append(f'    "{name}" [label="{name}"{extra}];')
    for arrow in drawn.arrows:
        label = "\\n".join(arrow.labels)
        style = (
            f', style=dashed, color="{UNDO_COLOUR}", fontcolor="{UNDO_COLOUR}"'
            if arrow.undo
            else ""
        )
        lines.append(f'    "{arrow.producer}" -> "{arrow.consumer}" [label="{label}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_arrow(arrow: Arrow) -> str:
    line = "-.->" if arrow.undo else "-->"
    label = "<br/>".join(arrow.labels)
    return f'    {_id(arrow.producer)} {line}|"{label}"| {_id(arrow.consumer)}'


def _id(service: str) -> str:
    # A prefix keeps a service called "end" (or starting with "o" or "x") from meaning
    # something else to Mermaid.
    return f"svc_{service}"
