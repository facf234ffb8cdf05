"""The payments service: charges an order through the payment provider, refunds it if cancelled."""
