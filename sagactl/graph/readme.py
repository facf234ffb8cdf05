"""The diagram committed in a Markdown file, between two marker comments."""

from __future__ import annotations

__all__ = ["BEGIN", "END", "MarkersMissing", "diagram_in", "fenced", "with_diagram"]

BEGIN = "<!-- graph:begin -->"
END = "<!-- graph:end -->"


class MarkersMissing(ValueError):
    """The file has no ``BEGIN`` ... ``END`` block to hold the diagram."""


def diagram_in(markdown: str) -> str:
    """The text between the markers (the ``mermaid`` fenced block, fences included)."""
    begin, end = _span(markdown)
    return markdown[begin:end].strip("\n") + "\n"


def with_diagram(markdown: str, mermaid: str) -> str:
    """``markdown`` with the block between the markers replaced by ``mermaid``, fenced."""
    begin, end = _span(markdown)
    return markdown[:begin] + "\n" + fenced(mermaid) + markdown[end:]


def fenced(mermaid: str) -> str:
    return f"```mermaid\n{mermaid.rstrip()}\n```\n"


def _span(markdown: str) -> tuple[int, int]:
    begin, end = markdown.find(BEGIN), markdown.find(END)
    if begin < 0 or end < begin:
        raise MarkersMissing(f"no {BEGIN} ... {END} block")
    return begin + len(BEGIN), end
