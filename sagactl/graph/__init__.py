"""``sagactl graph``: the choreography drawn from the system definition.

Pure renderers from a :class:`~saga_runtime.system.System` to Mermaid or dot text, a PNG
writer (Graphviz, else matplotlib), and the README block that holds the generated diagram.
"""

from sagactl.graph.model import Arrow, Choreography, choreography, legend
from sagactl.graph.picture import NoRenderer, available_renderer, write_png
from sagactl.graph.readme import MarkersMissing, diagram_in, fenced, with_diagram
from sagactl.graph.text import dot, mermaid

__all__ = [
    "Arrow",
    "Choreography",
    "MarkersMissing",
    "NoRenderer",
    "available_renderer",
    "choreography",
    "diagram_in",
    "dot",
    "fenced",
    "legend",
    "mermaid",
    "with_diagram",
    "write_png",
]
