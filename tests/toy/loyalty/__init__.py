"""Loyalty points: a customer earns points when an order of theirs ships (a test toy)."""
