"""``sagactl graph``: the renderers on a toy system, the picture, and the README's diagram."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import pytest

from saga_runtime import Event
from saga_runtime.system import Reaction, Service, System, reaction
from saga_system import SYSTEM
from sagactl.cli import main
from sagactl.graph import (
    MarkersMissing,
    NoRenderer,
    diagram_in,
    dot,
    fenced,
    mermaid,
    with_diagram,
    write_png,
)
from sagactl.graph import picture as picture_module

README = Path(__file__).resolve().parents[2] / "README.md"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _noop(uow: Any, envelope: Any) -> None:
    """A handler for the toy system (never called)."""


class Placed(Event):
    event_type = "Placed"


class Done(Event):
    event_type = "Done"


class Dropped(Event):
    event_type = "Dropped"


class Reserved(Event):
    event_type = "Reserved"


class Rejected(Event):
    event_type = "Rejected"


class Returned(Event):
    event_type = "Returned"


def _toy() -> System:
    """A shop and its stockroom: the stockroom reserves what the shop places, and returns
    it when the shop drops the order."""
    shop = Service(
        name="shop",
        emits=(Placed, Done, Dropped),
        commands=(Placed,),
        handles={Reserved: reaction(_noop, Done), Rejected: reaction(_noop, Dropped)},
    )
    stockroom = Service(
        name="stockroom",
        emits=(Reserved, Rejected, Returned),
        handles={Placed: reaction(_noop, Reserved, Rejected), Dropped: reaction(_noop, Returned)},
    )
    return System(
        services=(shop, stockroom),
        start=Placed,
        final=(Done, Dropped),
        cancelled=Dropped,
        compensations={Reserved: (Returned,)},
        no_effect=(Rejected,),
        terminal=(Done, Returned),
    )


def test_mermaid_draws_one_node_per_service_and_one_arrow_per_subscription() -> None:
    assert mermaid(_toy()) == (
        "flowchart LR\n"
        '    svc_shop("shop")\n'
        '    svc_stockroom("stockroom")\n'
        '    svc_shop -->|"▶ Placed<br/>■ Dropped"| svc_stockroom\n'
        '    svc_stockroom -->|"Reserved<br/>Rejected"| svc_shop\n'
        "    classDef service fill:#f4f6fa,stroke:#5b6b82\n"
        "    classDef starter fill:#d6e4f5,stroke:#2c4f7c,stroke-width:2px\n"
        "    class svc_stockroom service\n"
        "    class svc_shop starter\n"
    )


def test_compensations_go_on_a_dashed_arrow_of_their_own() -> None:
    """Once the shop records the returned stock, the stockroom's compensation is drawn."""
    toy = _toy()
    shop = toy.service("shop")
    handles: dict[type[Event], Reaction] = {**shop.handles, Returned: reaction(_noop)}
    services = (dataclasses.replace(shop, handles=handles), toy.service("stockroom"))
    toy = dataclasses.replace(toy, services=services, terminal=(Done,))
    lines = mermaid(toy).splitlines()
    assert '    svc_stockroom -->|"Reserved<br/>Rejected"| svc_shop' in lines
    assert '    svc_stockroom -.->|"↩ Returned"| svc_shop' in lines
    assert lines[-1] == "    linkStyle 2 stroke:#c0392b"
    assert '"stockroom" -> "shop" [label="↩ Returned", style=dashed' in dot(toy)


def test_dot_draws_the_same_graph() -> None:
    text = dot(_toy())
    assert text.startswith("digraph choreography {\n    rankdir=LR;\n")
    assert '    "shop" [label="shop", fillcolor="#d6e4f5", color="#2c4f7c", penwidth=2];' in text
    assert '    "stockroom" [label="stockroom"];' in text
    assert '    "shop" -> "stockroom" [label="▶ Placed\\n■ Dropped"];' in text
    assert '    "stockroom" -> "shop" [label="Reserved\\nRejected"];' in text
    assert text.endswith("}\n")


def test_every_subscription_of_the_system_is_drawn() -> None:
    text = mermaid(SYSTEM)
    for producer, event, consumer, _reaction in SYSTEM.edges():
        arrows = [
            line
            for line in text.splitlines()
            if line.startswith(f"    svc_{producer} -") and line.endswith(f"| svc_{consumer}")
        ]
        assert any(event.event_type in line for line in arrows), (producer, event, consumer)


def test_the_picture_is_a_png_drawn_with_matplotlib(tmp_path: Path) -> None:
    path = tmp_path / "toy.png"
    assert write_png(_toy(), path, "matplotlib") == "matplotlib"
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert write_png(SYSTEM, path, "matplotlib") == "matplotlib"
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_graphviz_draws_the_dot_text_when_it_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[list[str], str]] = []

    def fake_dot(argv: list[str], *, input: str, **_kwargs: Any) -> None:
        calls.append((argv, input))

    monkeypatch.setattr(picture_module, "has_graphviz", lambda: True)
    monkeypatch.setattr(subprocess, "run", fake_dot)
    assert write_png(_toy(), tmp_path / "toy.png") == "graphviz"
    assert calls == [(["dot", "-Tpng", "-o", str(tmp_path / "toy.png")], dot(_toy()))]


def _without_renderers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(picture_module, "has_graphviz", lambda: False)
    monkeypatch.setattr(picture_module, "has_matplotlib", lambda: False)


def test_without_graphviz_or_matplotlib_the_picture_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _without_renderers(monkeypatch)
    with pytest.raises(NoRenderer, match="neither Graphviz's dot nor matplotlib is installed"):
        write_png(_toy(), tmp_path / "toy.png")
    with pytest.raises(NoRenderer, match="Graphviz's dot is not installed"):
        write_png(_toy(), tmp_path / "toy.png", "graphviz")

    assert main(["graph", "--png", str(tmp_path / "toy.png")]) == 2
    err = capsys.readouterr().err
    assert "neither Graphviz's dot nor matplotlib is installed" in err
    assert "fix: install graphviz or matplotlib" in err
    assert not (tmp_path / "toy.png").exists()


def test_sagactl_graph_prints_mermaid_or_dot(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph"]) == 0
    assert capsys.readouterr().out == mermaid(SYSTEM)
    assert main(["graph", "--format", "dot"]) == 0
    assert capsys.readouterr().out == dot(SYSTEM)


def test_sagactl_graph_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "saga.png"
    assert main(["graph", "--png", str(path), "--renderer", "matplotlib"]) == 0
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert f"wrote {path} (matplotlib)" in capsys.readouterr().err
    nowhere = tmp_path / "missing" / "saga.png"
    assert main(["graph", "--png", str(nowhere), "--renderer", "matplotlib"]) == 1
    assert f"could not write {nowhere}" in capsys.readouterr().err


# --- the diagram in the README ----------------------------------------------------------------


def test_the_readme_shows_the_current_diagram() -> None:
    committed = diagram_in(README.read_text(encoding="utf-8"))
    assert committed == fenced(mermaid(SYSTEM)), (
        "the README's choreography diagram is stale: run ./dev graph --update-readme README.md"
    )


def test_update_readme_replaces_only_the_block_between_the_markers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n<!-- graph:begin -->\n```mermaid\nold\n```\n<!-- graph:end -->\n\nafter\n",
        encoding="utf-8",
    )
    assert main(["graph", "--update-readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text == (
        "# Title\n\n<!-- graph:begin -->\n"
        + fenced(mermaid(SYSTEM))
        + "<!-- graph:end -->\n\nafter\n"
    )
    assert "the diagram is updated" in capsys.readouterr().err
    assert main(["graph", "--update-readme", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == text
    assert "the diagram is up to date" in capsys.readouterr().err


def test_update_readme_refuses_a_file_without_markers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n", encoding="utf-8")
    assert main(["graph", "--update-readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert "no <!-- graph:begin --> ... <!-- graph:end --> block" in err
    assert readme.read_text(encoding="utf-8") == "# Title\n"
    with pytest.raises(MarkersMissing):
        with_diagram("<!-- graph:end --> <!-- graph:begin -->", "x")


def test_the_block_reads_back_what_was_written() -> None:
    text = with_diagram("a\n<!-- graph:begin -->\n<!-- graph:end -->\nb\n", mermaid(_toy()))
    assert diagram_in(text) == fenced(mermaid(_toy()))
