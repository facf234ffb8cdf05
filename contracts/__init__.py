"""The system's public contracts: the events each service emits, one module per producer.

Services import these and never each other. A contract module depends on nothing but
``saga_runtime``'s ``Event`` base and pydantic, so any consumer can take it.
"""
