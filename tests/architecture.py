"""The architecture's import rules, generated from the system definition.

``lint-imports`` (import-linter) checks them in ``./dev test`` (``test_architecture.py``):
services never import each other; saga_system sits above the services, which sit above
contracts, which sit above saga_runtime; the runtime knows no domain; the product never
imports the development harness; the operator's tool reaches services through the
definition; the simulators know nothing of the saga. The services are ``SYSTEM.names``,
so a service added to the definition is held to the rules without editing them.
Print them with ``python -m tests.architecture``.
"""

from __future__ import annotations

from saga_system import SYSTEM

TEMPLATE = """\
[importlinter]
root_packages =
    saga_runtime
    contracts
    saga_system
{service_lines}    outbox_relay
    migrations
    sagactl
    saga_harness
    simulators

# Services share the contracts package, never each other's code. A service's process entry
# point (`python -m <service>`) and its bootstrap's `build()` (for tests) start it from the one
# definition, saga_system, which composes every service: those two reach back up on purpose.
[importlinter:contract:services-independent]
name = The services never import each other
type = independence
modules =
{service_lines}ignore_imports =
    *.__main__ -> saga_system
    *.bootstrap -> saga_system

[importlinter:contract:layers]
name = saga_system above the services above contracts above saga_runtime
type = layers
layers =
    saga_system
    {service_layer}
    contracts
    saga_runtime
ignore_imports =
    *.__main__ -> saga_system
    *.bootstrap -> saga_system

[importlinter:contract:runtime-knows-no-domain]
name = saga_runtime imports no service, no contracts, no sagactl and no harness
type = forbidden
source_modules =
    saga_runtime
forbidden_modules =
    contracts
    saga_system
{service_lines}    outbox_relay
    migrations
    sagactl
    saga_harness
    simulators

[importlinter:contract:product-without-harness]
name = The product never imports the development harness or the simulators
type = forbidden
source_modules =
    saga_runtime
    contracts
    saga_system
{service_lines}    outbox_relay
    migrations
    sagactl
forbidden_modules =
    saga_harness
    simulators

# The operator's tool reaches the services through the definition (run, the operator commands'
# service list), not their code. One exception: `sagactl prepare` seeds stock's catalogue.
# The harness may import any service (it seeds and stocks the systems it starts).
[importlinter:contract:operator-tool-through-the-definition]
name = sagactl imports services only through saga_system, but for prepare's catalogue seed
type = forbidden
source_modules =
    sagactl
forbidden_modules =
{service_lines}allow_indirect_imports = True
ignore_imports =
    sagactl.cli -> stock.catalogue

# The simulators stand in for outside parties (a card provider, a mail server): they know the
# runtime's plumbing (health, logging), nothing of the saga.
[importlinter:contract:simulators-outside-the-saga]
name = The simulators import nothing of the saga but saga_runtime
type = forbidden
source_modules =
    simulators
forbidden_modules =
    contracts
    saga_system
{service_lines}    outbox_relay
    migrations
    sagactl
    saga_harness
"""


def import_rules(services: list[str] | None = None) -> str:
    """The import-linter configuration (INI) for ``services`` (default: the definition's)."""
    names = list(SYSTEM.names if services is None else services)
    return TEMPLATE.format(
        service_lines="".join(f"    {name}\n" for name in names),
        service_layer=" | ".join(names),
    )


if __name__ == "__main__":
    print(import_rules(), end="")
