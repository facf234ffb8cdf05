"""``sagactl graph``: the choreography drawn from the system definition."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from saga_system import SYSTEM
from sagactl.graph import (
    MarkersMissing,
    NoRenderer,
    dot,
    mermaid,
    with_diagram,
    write_png,
)
from sagactl.graph.readme import BEGIN, END
from sagactl.ops.commands.common import HelpFormatter, run
from sagactl.ops.errors import OperationFailed, Refusal
from sagactl.ops.render import Output

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    graph = sub.add_parser(
        "graph",
        help="draw the choreography (who emits what, who reacts to it) from the definition",
        description="Draws saga_system.SYSTEM: one node per service, one arrow per subscription\n"
        "labelled with its events (▶ the saga's start, ■ its final events, ↩ compensations,\n"
        "on dashed arrows). Mermaid text on stdout by default (GitHub renders it); --png\n"
        "draws a picture with Graphviz's dot if it is installed, else with matplotlib.",
        epilog="examples:\n  sagactl graph\n  sagactl graph --format dot | dot -Tsvg > saga.svg\n"
        "  sagactl graph --png docs/choreography.png\n"
        "  sagactl graph --update-readme README.md",
        formatter_class=HelpFormatter,
    )
    graph.add_argument(
        "--format",
        choices=("mermaid", "dot"),
        default="mermaid",
        help="the text printed on stdout (default: mermaid)",
    )
    graph.add_argument("--png", metavar="FILE", type=Path, help="write a PNG picture to FILE")
    graph.add_argument(
        "--renderer",
        choices=("auto", "graphviz", "matplotlib"),
        default="auto",
        help="what draws the --png picture (default: Graphviz if installed, else matplotlib)",
    )
    graph.add_argument(
        "--update-readme",
        metavar="FILE",
        type=Path,
        help=f"replace the mermaid block between {BEGIN} and {END} in FILE",
    )
    graph.set_defaults(func=run(cmd_graph))


def cmd_graph(args: argparse.Namespace, out: Output) -> int:
    if args.png is not None:
        try:
            used = write_png(SYSTEM, args.png, args.renderer)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise OperationFailed(f"could not write {args.png}: {exc}") from exc
        except NoRenderer as exc:
            raise Refusal(
                str(exc),
                "install graphviz or matplotlib (Debian's graphviz package, or "
                "pip install matplotlib)",
            ) from exc
        out.note(f"wrote {args.png} ({used})")
    if args.update_readme is not None:
        _update_readme(args.update_readme, out)
    if args.png is None and args.update_readme is None:
        sys.stdout.write(dot(SYSTEM) if args.format == "dot" else mermaid(SYSTEM))
    return 0


def _update_readme(path: Path, out: Output) -> None:
    try:
        before = path.read_text(encoding="utf-8")
        after = with_diagram(before, mermaid(SYSTEM))
    except OSError as exc:
        raise Refusal(f"cannot read {path}: {exc.strerror}") from exc
    except MarkersMissing as exc:
        raise Refusal(
            f"{path} has {exc}", f"put the two lines {BEGIN} and {END} where the diagram goes"
        ) from exc
    if after == before:
        out.note(f"{path}: the diagram is up to date")
        return
    path.write_text(after, encoding="utf-8")
    out.note(f"{path}: the diagram is updated")
