"""Processes of a harness system: replicas of a service, each with a port and a static
member name of its own, so that they share the group and the effects without fencing
each other."""

from __future__ import annotations

import argparse

import pytest

from saga_harness.commands import replica_count
from saga_harness.system import _replica_env, free_port


def test_a_replica_of_a_service_without_an_api_gets_its_own_health_port_and_member_name() -> None:
    env = {"CONSUMER_GROUP_INSTANCE_ID": "chaos", "PAYMENTS_HEALTH_PORT": "4000"}
    assert _replica_env("payments", 2, 4100, env) == {
        "PAYMENTS_HEALTH_PORT": "4100",
        "CONSUMER_GROUP_INSTANCE_ID": "chaos-2",
    }


def test_a_replica_of_a_service_with_an_api_gets_its_own_api_port() -> None:
    assert _replica_env("orders", 3, 4200, {}) == {"ORDERS_PORT": "4200"}


def test_replicas_are_asked_for_as_service_equals_count() -> None:
    assert replica_count("payments=2") == ("payments", 2)
    for bad in ("nobody=2", "payments", "payments=0", "payments=x", "payments=5"):
        with pytest.raises(argparse.ArgumentTypeError):
            replica_count(bad)


def test_ports_for_listeners_are_distinct_and_below_the_ephemeral_range() -> None:
    """bind(0) gives a port the kernel may next give an outgoing connection, before the
    process meant to listen on it starts (a relay died of 'Address already in use')."""
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 < port < 32768 for port in ports)
