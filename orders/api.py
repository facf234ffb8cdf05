"""The orders REST API: submit an order, watch it settle, cancel it."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from contracts.orders import Address, OrderLine
from orders import handlers
from orders.access import Customer, Reader, list_owner, visible
from orders.domain import Order, OrderStateError
from orders.repository import OrderRepository, TimelineEntry
from saga_runtime import (
    NON_BLANK,
    PRINTABLE,
    WHOLE_NUMBER,
    Email,
    JsonBodyRoute,
    Text,
    TokenVerifier,
    UnitOfWorkFactory,
    auth_responses,
    install_authentication,
    install_error_handlers,
    problem,
    unavailable_response,
)

# Text is taken as sent (never stripped), so each schema below is exactly what is accepted.
PostalCode = Annotated[str, Field(min_length=1, max_length=20), NON_BLANK]
Country = Annotated[
    str, Field(pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2"), NON_BLANK
]
# What the client may send as a key: visible ASCII, as HTTP headers carry it reliably.
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[!-~]+$"),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemIn(_Strict):
    sku: Text
    quantity: Annotated[int, Field(ge=1, le=1000, strict=True), WHOLE_NUMBER]


class PaymentIn(_Strict):
    card_token: Text


class AddressIn(_Strict):
    name: Text
    line1: Text
    line2: Annotated[str, Field(max_length=200), PRINTABLE] | None = None
    city: Text
    postal_code: PostalCode
    country: Country


class OrderIn(_Strict):
    customer_id: Annotated[
        Text | None,
        Field(description="the token's customer (its subject); optional, and a 403 if another"),
    ] = None
    email: Email
    items: list[ItemIn] = Field(min_length=1, max_length=100)
    payment: PaymentIn
    shipping_address: AddressIn


class LineOut(BaseModel):
    sku: str
    quantity: int
    unit_price_cents: int | None = None


class TimelineOut(BaseModel):
    event_id: str
    event_type: str
    producer: str
    occurred_at: datetime


class OrderOut(BaseModel):
    order_id: str
    customer_id: str
    status: Literal["PENDING", "APPROVED", "SHIPPED", "CANCELLED"]
    reason_code: str | None
    reason: str | None
    lines: list[LineOut]
    total_cents: int | None
    shipping_address: Address
    created_at: datetime
    timeline: list[TimelineOut] | None = None


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None


def _lines(order: Order) -> list[LineOut]:
    if order.priced_lines is not None:
        return [LineOut(**vars(line)) for line in order.priced_lines]
    return [LineOut(sku=line.sku, quantity=line.quantity) for line in order.lines]


def order_out(order: Order, timeline: list[TimelineEntry] | None = None) -> OrderOut:
    return OrderOut(
        order_id=order.id,
        customer_id=order.customer_id,
        status=order.status,
        reason_code=order.reason_code,
        reason=order.reason,
        lines=_lines(order),
        total_cents=order.total_cents,
        shipping_address=order.shipping_address,
        created_at=order.created_at,
        timeline=None if timeline is None else [TimelineOut(**vars(t)) for t in timeline],
    )


def _encode_cursor(order: Order) -> str:
    raw = json.dumps([order.created_at.isoformat(), order.id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, order_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), str(order_id)
    except (ValueError, TypeError) as exc:
        raise HTTPException(
            422,
            detail=[{"loc": ["query", "cursor"], "msg": "invalid cursor", "type": "value_error"}],
        ) from exc


async def get_uow_factory(request: Request) -> UnitOfWorkFactory:
    factory: UnitOfWorkFactory = request.app.state.uow_factory
    return factory


UowFactory = Annotated[UnitOfWorkFactory, Depends(get_uow_factory)]
# Order ids are UUIDs: anything outside URL-unreserved characters is no order's id.
OrderId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._~-]+$")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem("no order with this id (or not the caller's)")
}
# OpenAPI links: what a client (or a stateful API fuzzer) can do next with an accepted order.
ORDER_LINKS = {
    "GetOrder": {"operationId": "getOrder", "parameters": {"order_id": "$response.body#/order_id"}},
    "CancelOrder": {
        "operationId": "cancelOrder",
        "parameters": {"order_id": "$response.body#/order_id"},
    },
    "ListOrders": {
        "operationId": "listOrders",
        "parameters": {"customer_id": "$response.body#/customer_id"},
    },
}


def _place(
    factory: UnitOfWorkFactory, customer_id: str, body: OrderIn, idempotency_key: str | None
) -> Order:
    """The submitted order placed (or the one its idempotency key placed before).

    The one blocking step of a submission, so the endpoint is a coroutine that runs
    just this on a worker thread: a plain endpoint would hop to a thread for itself
    and again to check its response.
    """
    with factory.begin() as uow:
        order, _created = handlers.place_order(
            uow,
            customer_id=customer_id,
            email=body.email,
            lines=[OrderLine(sku=i.sku, quantity=i.quantity) for i in body.items],
            card_token=body.payment.card_token,
            shipping_address=Address(**body.shipping_address.model_dump()),
            idempotency_key=idempotency_key,
            fingerprint=handlers.request_hash(body.model_dump_json().encode()),
        )
    return order


def create_app(uow_factory: UnitOfWorkFactory, verifier: TokenVerifier) -> FastAPI:
    """The API over ``uow_factory``; every operation needs a token ``verifier`` accepts."""
    app = FastAPI(
        title="Orders",
        description="Submit orders and watch their saga settle. Every operation needs a bearer"
        " token: a customer's (scope `customer`, subject = customer id) places, reads, lists"
        " and cancels that customer's orders; an operator's (scope `operator`) reads any.",
        version="1.0",
        responses={**unavailable_response("the orders database"), **auth_responses()},
    )
    app.router.route_class = JsonBodyRoute
    app.state.uow_factory = uow_factory
    install_authentication(app, verifier)
    install_error_handlers(app, unavailable="the orders database")

    @app.post(
        "/orders",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=OrderOut,
        operation_id="submitOrder",
        responses={
            202: {"links": ORDER_LINKS},
            403: problem("not a customer's token, or a customer_id that is not the token's"),
            409: problem("Idempotency-Key reused with another body"),
        },
    )
    async def submit_order(
        customer: Customer,
        body: OrderIn,
        response: Response,
        factory: UowFactory,
        idempotency_key: IdempotencyKey = None,
    ) -> OrderOut:
        """Accept an order (202) for the token's customer; the saga runs asynchronously:
        poll ``Location``. An ``Idempotency-Key`` is the customer's own: another customer's
        use of the same key is another order."""
        if body.customer_id is not None and body.customer_id != customer.subject:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail="customer_id is not the token's customer"
            )
        body = body.model_copy(update={"customer_id": customer.subject})
        try:
            # Only the transaction goes to a worker thread (see ``_place``).
            order = await run_in_threadpool(
                _place, factory, customer.subject, body, idempotency_key
            )
        except handlers.IdempotencyKeyReused as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        response.headers["Location"] = f"/orders/{order.id}"
        return order_out(order)

    @app.get(
        "/orders/{order_id}",
        response_model=OrderOut,
        responses={**NOT_FOUND, 403: problem("a token with neither scope")},
        operation_id="getOrder",
    )
    def get_order(reader: Reader, order_id: OrderId, factory: UowFactory) -> OrderOut:
        """The order, its priced lines and its saga timeline (a customer's own, or any for an
        operator)."""
        with factory.pool.connection() as conn:
            repo = OrderRepository(conn)
            order = repo.get(order_id)
            if order is None or not visible(order, reader):
                raise HTTPException(status.HTTP_404_NOT_FOUND, detail="order not found")
            return order_out(order, repo.timeline(order_id))

    @app.get(
        "/orders",
        response_model=OrderPage,
        operation_id="listOrders",
        responses={403: problem("another customer's orders, or a token with neither scope")},
    )
    def list_orders(
        reader: Reader,
        factory: UowFactory,
        customer_id: Annotated[
            Text | None,
            Query(description="a customer's own by default; an operator must name one"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=500,
                pattern=r"^[A-Za-z0-9_=-]+$",
                description="a previous page's next_cursor",
            ),
        ] = None,
    ) -> OrderPage:
        """A customer's orders, newest first; pass ``next_cursor`` back for the next page."""
        owner = list_owner(reader, customer_id)
        before = _decode_cursor(cursor) if cursor else None
        with factory.pool.connection() as conn:
            orders = OrderRepository(conn).list_for_customer(owner, limit=limit + 1, before=before)
        page, more = orders[:limit], len(orders) > limit
        return OrderPage(
            items=[order_out(o) for o in page],
            next_cursor=_encode_cursor(page[-1]) if more else None,
        )

    @app.post(
        "/orders/{order_id}/cancel",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=OrderOut,
        operation_id="cancelOrder",
        responses={
            **NOT_FOUND,
            403: problem("not a customer's token"),
            409: problem("the order is final already"),
        },
    )
    def cancel(customer: Customer, order_id: OrderId, factory: UowFactory) -> OrderOut:
        """Cancel one's own order before shipment; what was done is undone by the other
        services."""
        try:
            with factory.begin() as uow:
                order = handlers.cancel_order(uow, order_id, customer_id=customer.subject)
        except handlers.OrderNotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="order not found") from exc
        except OrderStateError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        return order_out(order)

    return app
