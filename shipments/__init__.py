"""The shipments service (its domain, events, handlers and API arrive with the saga issue)."""
