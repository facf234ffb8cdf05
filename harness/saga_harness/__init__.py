"""The development harness: what runs the saga on a developer's machine and tests it.

Local provisioning of PostgreSQL and Kafka (``infra``), the process supervisor behind
``sagactl up``, the whole system as separate processes for the e2e tests (``system``), the
benchmarks (``bench``) and the chaos harness (``chaos``). It ships as its own distribution
(``harness/pyproject.toml``), never in the product's wheel or production image, and adds its
commands to ``sagactl`` through the ``sagactl.commands`` entry points (``commands``).
"""
