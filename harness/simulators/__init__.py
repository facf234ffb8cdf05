"""Stand-ins for the outside world the saga talks to: a card payment provider and a mail server.

Development and tests only; in production these are external parties.
"""
