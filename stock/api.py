"""The stock HTTP API: read stock levels; operators count products in with an admin PUT.

An admin PUT emits no event: no other service reacts to stock levels, and the change is
fully described by the product row (``received`` records every unit added or written off).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field

from contracts.stock import PricedLine
from saga_runtime import (
    NON_BLANK,
    WHOLE_NUMBER,
    JsonBodyRoute,
    Principal,
    TokenVerifier,
    UnitOfWorkFactory,
    auth_responses,
    install_authentication,
    install_error_handlers,
    problem,
    require_scope,
    unavailable_response,
)
from stock import domain
from stock.domain import MAX_PRICE_CENTS, MAX_UNITS, SKU_PATTERN, Product, ProductIncomplete
from stock.repository import StockRepository

# --- request and response bodies -------------------------------------------------------------


class ProductOut(BaseModel):
    sku: str
    name: str
    price_cents: int
    on_hand: int = Field(description="units available to reserve")
    reserved: int = Field(description="units held for orders not yet approved")
    sold: int = Field(description="units ever sold")
    restocked: int = Field(description="sold units put back after a cancellation")
    received: int = Field(description="units ever added (seeding, admin counts)")

    @classmethod
    def of(cls, product: Product) -> ProductOut:
        return cls(
            sku=product.sku,
            name=product.name,
            price_cents=product.price_cents,
            on_hand=product.on_hand,
            reserved=product.reserved,
            sold=product.sold,
            restocked=product.restocked,
            received=product.received,
        )


class StockList(BaseModel):
    products: list[ProductOut]


class ReservationOut(BaseModel):
    order_id: str
    status: str
    lines: list[PricedLine]
    total_cents: int | None
    reason: str | None


class ProductPut(BaseModel):
    """``on_hand`` is the new count of available units; ``name`` and ``price_cents`` are
    required only to create a product. A new price applies to later reservations only."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200, strict=True), NON_BLANK] | None = None
    price_cents: (
        Annotated[int, Field(ge=0, le=MAX_PRICE_CENTS, strict=True), WHOLE_NUMBER] | None
    ) = None
    on_hand: Annotated[int, Field(ge=0, le=MAX_UNITS, strict=True), WHOLE_NUMBER]


# --- dependencies (Annotated aliases keep the routes signature-only) ----------------------------


async def get_pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


PoolDep = Annotated[ConnectionPool, Depends(get_pool)]


def get_conn(pool: PoolDep) -> Iterator[psycopg.Connection]:
    with pool.connection() as conn:
        yield conn


ConnDep = Annotated[psycopg.Connection, Depends(get_conn)]


async def get_uow_factory(request: Request) -> UnitOfWorkFactory:
    factory: UnitOfWorkFactory = request.app.state.uow_factory
    return factory


UowFactoryDep = Annotated[UnitOfWorkFactory, Depends(get_uow_factory)]


# Stock levels and prices are the shop's catalogue, open to read; counting stock in and
# reading an order's reservation are an operator's (a token with the ``operator`` scope).
OPERATOR = "operator"
Operator = Annotated[Principal, Depends(require_scope(OPERATOR))]
OPERATOR_ONLY = auth_responses(forbidden="the token lacks the operator scope")
SkuPath = Annotated[
    str, Path(pattern=SKU_PATTERN, description="letters, digits, '.', '_' or '-'; 1-64")
]

# OpenAPI links: the product a PUT wrote can be read back.
PRODUCT_LINKS = {
    "GetProduct": {"operationId": "getProduct", "parameters": {"sku": "$request.path.sku"}}
}

# --- routes ------------------------------------------------------------------------------------

router = APIRouter(route_class=JsonBodyRoute)


@router.get("/stock", response_model=StockList, operation_id="listStock")
def list_stock(conn: ConnDep) -> StockList:
    return StockList(products=[ProductOut.of(p) for p in StockRepository(conn).products()])


@router.get(
    "/stock/{sku}",
    response_model=ProductOut,
    responses={404: problem("no such product")},
    operation_id="getProduct",
)
def get_stock(sku: SkuPath, conn: ConnDep) -> ProductOut:
    product = StockRepository(conn).product(sku)
    if product is None:
        raise HTTPException(404, detail=f"no product {sku}")
    return ProductOut.of(product)


@router.put(
    "/stock/{sku}",
    response_model=ProductOut,
    operation_id="putProduct",
    responses={
        200: {"links": PRODUCT_LINKS},
        201: {"description": "created", "model": ProductOut, "links": PRODUCT_LINKS},
        **OPERATOR_ONLY,
    },
)
def put_stock(
    _operator: Operator,
    sku: SkuPath,
    body: ProductPut,
    uow_factory: UowFactoryDep,
    response: Response,
) -> ProductOut:
    """Create a product, or set an existing one's count (and optionally name and price)."""
    try:
        product, created = _put(uow_factory, sku, body)
    except ProductIncomplete as exc:
        raise RequestValidationError(
            [
                {
                    "type": "missing",
                    "loc": ("body", field),
                    "msg": f"Field required to create product {sku}",
                }
                for field in exc.missing
            ]
        ) from None
    if created:
        response.status_code = 201
    return ProductOut.of(product)


def _put(uow_factory: UnitOfWorkFactory, sku: str, body: ProductPut) -> tuple[Product, bool]:
    fields: dict[str, Any] = {"name": body.name, "price_cents": body.price_cents}
    with uow_factory.begin() as uow:
        repository = StockRepository(uow.conn)
        current = repository.lock_products([sku]).get(sku)
        new = domain.put_product(current, sku=sku, on_hand=body.on_hand, **fields)
        if current is None:
            if repository.insert_product(new):
                return new, True
            # Created by a concurrent PUT since we looked: count on top of that one.
            current = repository.lock_products([sku])[sku]
            new = domain.put_product(current, sku=sku, on_hand=body.on_hand, **fields)
        repository.update_product(new)
        return new, False


@router.get(
    "/reservations/{order_id}",
    response_model=ReservationOut,
    responses={404: problem("no reservation for this order"), **OPERATOR_ONLY},
    operation_id="getReservation",
)
def get_reservation(
    _operator: Operator,
    order_id: Annotated[
        str,
        Path(
            min_length=1,
            max_length=200,
            pattern=r"^[A-Za-z0-9._~-]+$",
            description="an order id (orders are UUIDs): URL-unreserved characters only",
        ),
    ],
    conn: ConnDep,
) -> ReservationOut:
    reservation = StockRepository(conn).reservation(order_id)
    if reservation is None:
        raise HTTPException(404, detail=f"no reservation for order {order_id}")
    return ReservationOut(
        order_id=reservation.order_id,
        status=reservation.status,
        lines=list(reservation.lines),
        total_cents=reservation.total_cents,
        reason=reservation.reason,
    )


@router.get("/healthz")
def health(conn: ConnDep) -> dict[str, str]:
    conn.execute("SELECT 1")
    return {"status": "ok"}


def create_app(
    *, pool: ConnectionPool, uow_factory: UnitOfWorkFactory, verifier: TokenVerifier
) -> FastAPI:
    """The API over a service's pool; operator operations need a token ``verifier`` accepts."""
    app = FastAPI(
        title="Stock",
        summary="Stock levels and prices of the saga's products.",
        version="1",
        responses=unavailable_response("the stock database"),
    )
    app.state.pool = pool
    app.state.uow_factory = uow_factory
    install_authentication(app, verifier)
    app.include_router(router)
    install_error_handlers(app, unavailable="the stock database")
    return app
