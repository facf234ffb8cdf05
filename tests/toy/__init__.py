"""A toy sixth service, built the way the README's "Add a service" says: its package, its
line in the system definition, its migration. ``tests/integration/test_sixth_service.py``
runs it on the real runtime, broker and database."""
