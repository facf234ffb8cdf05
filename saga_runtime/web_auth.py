"""Authentication at the HTTP edge, for any API: bearer JWTs with scopes, or one API key.

A missing, malformed, expired or otherwise unprovable credential is a 401 whose
``WWW-Authenticate`` says why (RFC 6750 3.1); a valid token without the scope an operation
needs is a 403 (``insufficient_scope``). Both are ``{"detail": ...}`` like every other error,
and both are decided before the operation runs, so a bad token never costs a query.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from saga_runtime.auth import InvalidToken, Principal, TokenVerifier
from saga_runtime.web import Problem

__all__ = [
    "Authenticated",
    "api_key_guard",
    "auth_responses",
    "authenticate",
    "install_authentication",
    "require_scope",
]

# The OpenAPI security scheme (an HTTP bearer scheme, so /docs' "Authorize" takes a token as
# it is pasted). auto_error=False: a missing header is answered below, with our own body.
_bearer = HTTPBearer(
    scheme_name="bearerJWT",
    bearerFormat="JWT",
    description="A JWT from the identity provider, or locally `sagactl token --customer ID`"
    " / `sagactl token --operator`. Scopes (the `scope` claim): `customer` (the subject is the"
    " customer id) and `operator`.",
    auto_error=False,
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


def _unauthorized(detail: str, *, error: str | None = None) -> HTTPException:
    challenge = 'Bearer realm="saga-outbox"'
    if error is not None:
        # The descriptions are our fixed sentences (no quotes), never the caller's input.
        challenge += f', error="{error}", error_description="{detail}"'
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": challenge})


def install_authentication(app: FastAPI, verifier: TokenVerifier) -> None:
    """Give ``app``'s routes the verifier their ``Authenticated`` dependencies use."""
    app.state.token_verifier = verifier


# The dependencies below are coroutines although nothing in them waits: FastAPI runs a
# plain function dependency on a worker thread, and the hop there and back cost more
# than verifying the token. They never block (the verifier's keys are loaded at start).


async def authenticate(request: Request, credentials: Credentials) -> Principal:
    """The caller proven by the request's bearer token; a 401 when it proves nothing."""
    if credentials is None:
        raise _unauthorized("a bearer token is required: Authorization: Bearer <token>")
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        return verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        raise _unauthorized(exc.reason, error="invalid_token") from None


Authenticated = Annotated[Principal, Depends(authenticate)]


def require_scope(*scopes: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the caller, if its token has one of ``scopes``; else a 403."""
    wanted = " ".join(scopes)

    async def check(principal: Authenticated) -> Principal:
        if not any(principal.has(scope) for scope in scopes):
            raise HTTPException(
                403,
                detail=f"this needs a token with the scope {' or '.join(scopes)}",
                headers={
                    "WWW-Authenticate": f'Bearer realm="saga-outbox", error="insufficient_scope",'
                    f' scope="{wanted}"'
                },
            )
        return principal

    return check


_CHALLENGE_HEADER = {
    "WWW-Authenticate": {
        "description": "the scheme (Bearer), and why the credential was refused",
        "schema": {"type": "string"},
    }
}


def auth_responses(*, forbidden: str | None = None) -> dict[int | str, dict[str, Any]]:
    """The documented 401 (and, when the operation checks a scope or an owner, 403)."""
    responses: dict[int | str, dict[str, Any]] = {
        401: {
            "description": "no credential, or one that is malformed, expired or not ours",
            "model": Problem,
            "headers": _CHALLENGE_HEADER,
        }
    }
    if forbidden is not None:
        responses[403] = {"description": forbidden, "model": Problem}
    return responses


def api_key_guard(expected: str, *, description: str) -> Callable[..., Awaitable[None]]:
    """A dependency for a service called by one client (a provider and its merchant):
    ``Authorization: Bearer <key>`` must carry ``expected``, compared in constant time."""
    if not expected:
        raise ValueError("an empty API key would let anyone in")
    scheme = HTTPBearer(scheme_name="apiKey", description=description, auto_error=False)
    wanted = expected.encode("utf-8")

    # A default rather than an Annotated alias: the scheme is local to this guard, and a
    # local name cannot be resolved from a postponed annotation.
    async def check(
        credentials: HTTPAuthorizationCredentials | None = Security(scheme),  # noqa: B008
    ) -> None:
        if credentials is None:
            raise _unauthorized("an API key is required: Authorization: Bearer <key>")
        # Headers arrive as latin-1 text, so any value encodes and just fails to match.
        if not hmac.compare_digest(credentials.credentials.encode("latin-1"), wanted):
            raise _unauthorized("the API key is not valid", error="invalid_token")

    return check
