"""What every HTTP API shares at its edge: bad input is a 422 naming the field, an unavailable
database is a 503 with ``Retry-After``, and the OpenAPI document says both.

Two FastAPI defaults turn bad input into server errors or the wrong status, so the apps use
these instead: its 422 handler echoes the input back, and a lone surrogate in it cannot be
encoded (500); and a body it cannot parse for any reason other than a JSON syntax error
(invalid UTF-8, an integer of 5000 digits, deep nesting) is a bare 400.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Route

from saga_runtime.db import TRANSIENT_DB_ERRORS
from saga_runtime.logs import get_logger

__all__ = [
    "RETRY_AFTER_SECONDS",
    "JsonBodyRoute",
    "Problem",
    "field_errors",
    "install_error_handlers",
    "problem",
    "unavailable_response",
]

RETRY_AFTER_SECONDS = 1

log = get_logger("saga_runtime.web")


class Problem(BaseModel):
    """The body of every error other than a validation error."""

    detail: str


def problem(description: str) -> dict[str, Any]:
    """An entry of a route's ``responses``: an error answered with a ``Problem`` body."""
    return {"description": description, "model": Problem}


def unavailable_response(what: str) -> dict[int | str, dict[str, Any]]:
    """The documented 503, for an app's ``responses`` (so every operation lists it)."""
    return {
        503: {
            "description": f"{what} is unavailable: retry after the given delay",
            "model": Problem,
            "headers": {
                "Retry-After": {
                    "description": "seconds to wait before retrying",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                }
            },
        }
    }


def _text(value: str) -> str:
    # A lone surrogate cannot be encoded as UTF-8: show it as its escape, e.g. "\ud800".
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _jsonable(value: Any) -> Any:
    """``value`` as JSON that always encodes: text escaped, non-finite floats as text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return _text(str(value))


def field_errors(errors: Iterable[Any]) -> list[dict[str, Any]]:
    """Each error's ``type``, ``loc``, ``msg`` and ``ctx``, never its ``input``: the input may
    not be representable as JSON (a lone surrogate), may be huge, and the caller has it."""
    rendered = []
    for error in errors:
        entry = {
            "type": _jsonable(error.get("type", "value_error")),
            "loc": [_jsonable(item) for item in error.get("loc", ())],
            "msg": _jsonable(error.get("msg", "invalid")),
        }
        if error.get("ctx"):
            entry["ctx"] = _jsonable(error["ctx"])
        rendered.append(entry)
    return rendered


async def _validation_failed(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": field_errors(exc.errors())}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer, except that a 405's ``Allow`` lists the methods of every route of the
    path: Starlette lists only those of the first route that matched it (GET and POST of one
    path are two routes)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        path = request.scope["path"]
        methods = {
            method
            for route in request.app.router.routes
            if isinstance(route, Route) and route.methods and route.path_regex.match(path)
            for method in route.methods
        }
        headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
        exc = HTTPException(405, exc.detail, headers=headers)
    return await http_exception_handler(request, exc)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _JsonRequest(Request):
    """A request whose JSON body fails to parse only with ``json.JSONDecodeError`` (which
    FastAPI answers with a 422), whatever the reason: bad UTF-8, NaN, a giant integer."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body, parse_constant=_refuse_constant)
            except json.JSONDecodeError:
                raise
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                doc = body.decode("utf-8", "replace")
                raise json.JSONDecodeError(f"unparsable body: {exc}", doc, 0) from exc
        return self._json


class JsonBodyRoute(APIRoute):
    """Route class of every API (``FastAPI(...).router.route_class`` or ``APIRouter(route_class=
    ...)``): a body that cannot be parsed is a 422, never a 400 or a 500."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            return await handle(_JsonRequest(request.scope, request.receive, request._send))

        return handler


def install_error_handlers(app: FastAPI, *, unavailable: str) -> None:
    """Answer validation errors with a 422 that always renders, a database that is
    unavailable (``TRANSIENT_DB_ERRORS``) with a 503 and ``Retry-After``, and a method the
    path does not support with a 405 whose ``Allow`` is complete.

    ``unavailable`` names what is down in the 503's detail, e.g. "the service's database".
    """

    async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("api.database_unavailable", error=repr(exc))
        return JSONResponse(
            {"detail": f"{unavailable} is unavailable, retry shortly"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(HTTPException, _http_error)
    for error in TRANSIENT_DB_ERRORS:
        if issubclass(error, Exception):
            app.add_exception_handler(error, database_unavailable)
