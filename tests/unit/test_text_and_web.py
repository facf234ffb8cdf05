"""The shared edge of every API: the text and e-mail rules, and the error answers."""

from __future__ import annotations

import json
from typing import Annotated

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from saga_runtime import (
    WHOLE_NUMBER,
    Email,
    JsonBodyRoute,
    Printable,
    Text,
    field_errors,
    install_error_handlers,
)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text | None = None
    printable: Printable | None = None
    email: Email | None = None
    count: Annotated[int, Field(ge=0, le=10, strict=True), WHOLE_NUMBER] | None = None


def refused(**fields: object) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate(fields)
    return [str(error["loc"][0]) for error in caught.value.errors()]


@pytest.mark.parametrize("value", ["x", " x ", "Zoë Ω", "tab-free", "😀", "a" * 200])
def test_text_accepts_printable_single_line_text_as_sent(value):
    assert Body(text=value).text == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "\u3000",
        "a\x00b",
        "a\ud800b",
        "\udfff",
        "a\nb",
        "a\tb",
        "\x7f",
        "\x85",
        "a" * 201,
    ],
)
def test_text_refuses_blank_control_or_unencodable_text_or_too_much(value):
    assert refused(text=value) == ["text"]


def test_printable_allows_blank_but_not_controls():
    assert Body(printable="").printable == ""
    assert Body(printable="  ").printable == "  "
    assert refused(printable="a\x00") == ["printable"]


@pytest.mark.parametrize(
    "address",
    [
        "ada@example.com",
        "zoë@example.com",
        "ada@bücher.de",
        "用户@例子.广告",
        "a.b+c@xn--bcher-kva.de",
        "o'brien@a-b.example.co.uk",
        "x" * 64 + "@example.com",
    ],
)
def test_deliverable_addresses_are_accepted_as_sent(address):
    assert Body(email=address).email == address


@pytest.mark.parametrize(
    "address",
    [
        "plain",
        "a@b",
        "@example.com",
        "a@",
        "a@@b.com",
        "a@b@c.com",
        "a b@c.com",
        '"q"@c.com',
        "a(b)@c.com",
        "a,b@c.com",
        "a:b@c.com",
        "a;b@c.com",
        "<a>@c.com",
        "[a]@c.com",
        "a\\b@c.com",
        "a@-b.com",
        "a@b-.com",
        "a@b_c.com",
        "a@b..com",
        "a@.b.com",
        "a@b.com.",
        "x" * 65 + "@c.com",
        "a@" + "x" * 64 + ".com",
        "a@" + "ü" * 60 + ".de",
        "a@\u0627\u0644a.com",
        "a@c.com\u3000",
        "a\x00@c.com",
        "a@c.com\n",
        "a@" + ".".join(["b" * 63] * 4) + ".com",
    ],
)
def test_undeliverable_addresses_are_refused(address):
    assert refused(email=address) == ["email"]


def test_a_whole_number_is_an_integer_as_json_schema_says_and_nothing_else_is():
    assert Body.model_validate({"count": 3.0}).count == 3
    for value in ("3", True, 3.5, 1e999, 11, -1):
        assert refused(count=value) == ["count"], value


def test_field_errors_always_encode_and_never_echo_the_input():
    errors = [
        {"type": "extra_forbidden", "loc": ("body", "\ud800"), "msg": "x", "input": "\ud800"},
        {
            "type": "value_error",
            "loc": ("body", 0),
            "msg": "m",
            "ctx": {"error": ValueError("\udfff"), "limit": float("nan")},
        },
    ]
    rendered = field_errors(errors)
    json.dumps(rendered, ensure_ascii=False).encode("utf-8")
    assert rendered[0] == {"type": "extra_forbidden", "loc": ["body", "\\ud800"], "msg": "x"}
    assert rendered[1]["ctx"] == {"error": "\\udfff", "limit": "nan"}


@pytest.fixture
def app_client() -> TestClient:
    app = FastAPI()
    app.router.route_class = JsonBodyRoute
    install_error_handlers(app, unavailable="the test database")

    @app.post("/things")
    def create(body: Body) -> Body:
        return body

    @app.get("/things")
    def down() -> None:
        raise psycopg.OperationalError("connection refused")

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"text": "\\ud800"}',
        b'{"\\ud800": 1}',
        b'{"text": "\xff"}',
        b'{"count": ' + b"9" * 5000 + b"}",
        b'{"count": NaN}',
        b"[" * 100_000,
        b"{",
    ],
)
def test_any_body_is_a_422_that_renders(app_client, raw):
    response = app_client.post("/things", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_an_unavailable_database_is_a_503_with_retry_after(app_client):
    response = app_client.get("/things")
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1


def test_a_405_allows_every_method_of_the_path(app_client):
    response = app_client.delete("/things")
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["Allow"].split(",")} >= {"GET", "POST"}
