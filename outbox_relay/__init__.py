"""The outbox relay process: one thread per outbox, each active or hot standby."""
