"""sagactl: the operator's command line: services, relay, migrations and operator commands."""
