"""Who may do what with orders: a customer's token names the customer (its subject) and
reaches that customer's orders only; an operator's reads any order."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, status

from orders.domain import Order
from saga_runtime import Principal, require_scope

__all__ = ["CUSTOMER", "OPERATOR", "Customer", "Reader", "list_owner", "visible"]

CUSTOMER, OPERATOR = "customer", "operator"
# Route parameters: the caller, once its token has the scope (else a 401 or a 403).
Customer = Annotated[Principal, Depends(require_scope(CUSTOMER))]
Reader = Annotated[Principal, Depends(require_scope(CUSTOMER, OPERATOR))]


def visible(order: Order | None, reader: Principal) -> bool:
    """An operator sees every order; a customer only their own (another's is "not found",
    so that a customer cannot even learn which order ids exist)."""
    return order is not None and (reader.has(OPERATOR) or order.customer_id == reader.subject)


def list_owner(reader: Principal, customer_id: str | None) -> str:
    """Whose orders a list shows: a customer's own; for an operator, the one asked for."""
    if reader.has(CUSTOMER) and customer_id in (None, reader.subject):
        return reader.subject
    if reader.has(OPERATOR) and customer_id is not None:
        return customer_id
    if reader.has(OPERATOR):
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["query", "customer_id"],
                    "msg": "an operator lists one customer's orders: give customer_id",
                    "type": "missing",
                }
            ],
        )
    raise HTTPException(status.HTTP_403_FORBIDDEN, detail="a customer lists only their own orders")
