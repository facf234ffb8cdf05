"""The provider's HTTP API: charges, voids, refunds, lookups and the whole ledger."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Path, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from saga_runtime import (
    NON_BLANK,
    RETRY_AFTER_SECONDS,
    WHOLE_NUMBER,
    ConfigurationError,
    JsonBodyRoute,
    api_key_guard,
    auth_responses,
    install_error_handlers,
    problem,
    unavailable_response,
)
from simulators.payment_provider.latency import add_latency
from simulators.payment_provider.ledger import ChargeRecord, RefundRecord, VoidRecord, ensure_schema
from simulators.payment_provider.pool import open_pool
from simulators.payment_provider.processing import (
    ChargeRequest,
    ChargeVoided,
    InvalidRefund,
    Processor,
    ProviderError,
    RefundRequest,
    Result,
)
from simulators.payment_provider.settings import ProviderSettings

log = logging.getLogger("payment_provider")

# The largest integer every JSON reader holds exactly (I-JSON, RFC 7493): a bigger one may be
# rounded by a client or a schema validator (2**63 - 1 + 192 reads as 2**63 - 1 in a double).
MAX_CENTS = 2**53 - 1
Key = Annotated[str, Field(min_length=1, max_length=255), NON_BLANK]
Cents = Annotated[int, Field(ge=0, le=MAX_CENTS, strict=True), WHOLE_NUMBER]
REPLAYED_HEADER = "Idempotent-Replayed"
MERCHANT_ONLY = auth_responses()
# OpenAPI links: a charge can be looked up by its key, and refunded.
CHARGE_LINKS = {
    "GetCharge": {
        "operationId": "getCharge",
        "parameters": {"idempotency_key": "$request.body#/idempotency_key"},
    },
    "RefundCharge": {
        "operationId": "createRefund",
        "requestBody": {
            "idempotency_key": "refund-{$response.body#/charge_id}",
            "charge_id": "$response.body#/charge_id",
            "amount_cents": "$response.body#/amount_cents",
        },
    },
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChargeBody(_Body):
    idempotency_key: Key
    order_id: Key
    amount_cents: Cents
    card_token: Key


class VoidBody(_Body):
    idempotency_key: Key


class RefundBody(_Body):
    idempotency_key: Key
    charge_id: Key
    amount_cents: Cents


class ChargeView(BaseModel):
    charge_id: str
    idempotency_key: str
    order_id: str
    amount_cents: int
    card_token: str
    status: Literal["approved", "declined"]
    decline_code: str | None
    reason: str | None
    refund_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, record: ChargeRecord) -> ChargeView:
        return cls.model_validate(record, from_attributes=True)


class RefundView(BaseModel):
    refund_id: str
    idempotency_key: str
    charge_id: str
    amount_cents: int
    status: Literal["refunded"] = "refunded"
    created_at: datetime

    @classmethod
    def of(cls, record: RefundRecord) -> RefundView:
        return cls.model_validate(record, from_attributes=True)


class VoidView(BaseModel):
    """The key is voided: a charge under it is refused from now on (409 ``charge_voided``)."""

    idempotency_key: str
    status: Literal["voided"] = "voided"
    created_at: datetime

    @classmethod
    def of(cls, record: VoidRecord) -> VoidView:
        return cls.model_validate(record, from_attributes=True)


class LedgerView(BaseModel):
    """Every charge (approved or declined: only approved ones moved money), refund and void."""

    charges: list[ChargeView]
    refunds: list[RefundView]
    voids: list[VoidView]


def _processor(request: Request) -> Processor:
    processor: Processor = request.app.state.processor
    return processor


ProcessorDep = Annotated[Processor, Depends(_processor)]


def _answer(view: BaseModel, result: Result[ChargeRecord] | Result[RefundRecord]) -> JSONResponse:
    declined = isinstance(result.record, ChargeRecord) and result.record.status == "declined"
    return JSONResponse(
        status_code=status.HTTP_402_PAYMENT_REQUIRED if declined else status.HTTP_201_CREATED,
        content=view.model_dump(mode="json"),
        headers={REPLAYED_HEADER: "true"} if result.replayed else None,
    )


def create_app(settings: ProviderSettings) -> FastAPI:
    """The provider app; its pool opens (and its schema is created) when it starts serving.

    Every operation needs the merchant's API key (``settings.api_key``): a provider that
    moves money and lists card tokens is never open.
    """
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
    if not api_key:
        raise ConfigurationError(
            "PROVIDER_API_KEY is not set: the provider never runs open (./dev writes one to .env)"
        )
    merchant = [
        Depends(api_key_guard(api_key, description="the merchant's key (PROVIDER_API_KEY)"))
    ]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = open_pool(settings)
        try:
            with pool.connection() as conn:
                ensure_schema(conn)
            app.state.processor = Processor(pool, slow_seconds=settings.slow_seconds)
            yield
        finally:
            pool.close()

    app = FastAPI(
        title="Payment provider (simulator)",
        lifespan=lifespan,
        responses=unavailable_response("the provider (its ledger or card network)"),
    )
    app.router.route_class = JsonBodyRoute
    install_error_handlers(app, unavailable="the provider's ledger")
    add_latency(app, settings.latency_seconds)

    @app.exception_handler(ProviderError)
    async def refused(_request: Request, exc: ProviderError) -> JSONResponse:
        if isinstance(exc, InvalidRefund):  # a field error, shaped as every other 422
            error = {"type": "value_error", "loc": ["body", "amount_cents"], "msg": str(exc)}
            return JSONResponse(status_code=exc.status_code, content={"detail": [error]})
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status_code >= 500 else None
        return JSONResponse(
            status_code=exc.status_code, content={"detail": str(exc)}, headers=headers
        )

    @app.exception_handler(ChargeVoided)
    async def voided(_request: Request, exc: ChargeVoided) -> JSONResponse:
        # A 409 like a key conflict, told apart by its code: the client must treat
        # it as "not charged, and never will be", not as a bug.
        return JSONResponse(
            status_code=exc.status_code, content={"detail": str(exc), "code": exc.code}
        )

    @app.post(
        "/charges",
        dependencies=merchant,
        status_code=status.HTTP_201_CREATED,
        response_model=ChargeView,
        operation_id="createCharge",
        responses={
            **MERCHANT_ONLY,
            201: {"links": CHARGE_LINKS},
            402: {"description": "declined (the body says why)", "model": ChargeView},
            409: problem(
                "the idempotency key was used for another request, or was voided"
                " (code `charge_voided`: not charged, and never will be)"
            ),
        },
    )
    def create_charge(body: ChargeBody, processor: ProcessorDep) -> JSONResponse:
        result = processor.charge(ChargeRequest(**body.model_dump()))
        if not result.replayed:
            log.info(
                "provider.charge %s %s %s",
                result.record.charge_id,
                result.record.status,
                result.record.order_id,
            )
        return _answer(ChargeView.of(result.record), result)

    # ``:path`` so that a key containing "/" still names one charge.
    @app.get(
        "/charges/{idempotency_key:path}",
        dependencies=merchant,
        response_model=ChargeView,
        responses={404: problem("no charge under this key"), **MERCHANT_ONLY},
        operation_id="getCharge",
    )
    def get_charge(
        idempotency_key: Annotated[str, Path(max_length=255), NON_BLANK], processor: ProcessorDep
    ) -> ChargeView | JSONResponse:
        record = processor.find_charge(idempotency_key)
        if record is None:
            return JSONResponse(
                status_code=status.HTTP_404_NOT_FOUND,
                content={"detail": f"no charge under key {idempotency_key!r}"},
            )
        return ChargeView.of(record)

    @app.post(
        "/voids",
        dependencies=merchant,
        status_code=status.HTTP_201_CREATED,
        response_model=VoidView,
        responses={
            **MERCHANT_ONLY,
            200: {"model": ChargeView, "description": "The key holds a charge: nothing voided."},
        },
        operation_id="voidCharge",
    )
    def void_charge(body: VoidBody, processor: ProcessorDep) -> JSONResponse:
        """Return the charge the key holds, or void the key so that no charge is ever made.

        For a client that gave up on a charge without hearing its outcome: after
        this call the answer is final, and a request still in transit is refused.
        (A body, not a path under ``/charges/{key}``: that path takes any key, "/" included.)
        """
        idempotency_key = body.idempotency_key
        result = processor.void(idempotency_key)
        if isinstance(result.record, ChargeRecord):
            return JSONResponse(
                status_code=status.HTTP_200_OK,
                content=ChargeView.of(result.record).model_dump(mode="json"),
            )
        if not result.replayed:
            log.info("provider.void %s", idempotency_key)
        return JSONResponse(
            status_code=status.HTTP_201_CREATED,
            content=VoidView.of(result.record).model_dump(mode="json"),
            headers={REPLAYED_HEADER: "true"} if result.replayed else None,
        )

    @app.post(
        "/refunds",
        dependencies=merchant,
        status_code=status.HTTP_201_CREATED,
        response_model=RefundView,
        operation_id="createRefund",
        responses={
            **MERCHANT_ONLY,
            404: problem("no such charge"),
            409: problem("key reused for another request, or the charge is not refundable"),
        },
    )
    def create_refund(body: RefundBody, processor: ProcessorDep) -> JSONResponse:
        result = processor.refund(RefundRequest(**body.model_dump()))
        return _answer(RefundView.of(result.record), result)

    @app.get(
        "/ledger",
        response_model=LedgerView,
        operation_id="getLedger",
        dependencies=merchant,
        responses=MERCHANT_ONLY,
    )
    def ledger(processor: ProcessorDep) -> LedgerView:
        charges, refunds, voids = processor.ledger()
        return LedgerView(
            charges=[ChargeView.of(c) for c in charges],
            refunds=[RefundView.of(r) for r in refunds],
            voids=[VoidView.of(v) for v in voids],
        )

    @app.get("/health")
    def health(processor: ProcessorDep) -> dict[str, str]:
        with processor.pool.connection() as conn:
            conn.execute("SELECT 1")
        return {"status": "ok"}

    return app
