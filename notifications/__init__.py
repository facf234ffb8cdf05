"""The notifications service: tells customers that their order was approved, shipped or cancelled.

At most one notification per order and kind: the (order, kind) row is inserted
before anything is sent, and an event that finds the row already there sends nothing.
"""
