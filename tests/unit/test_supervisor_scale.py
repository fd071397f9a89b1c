"""`ticketing up --scale`: names, ports and environment of each replica (no processes started)."""

from __future__ import annotations

import pytest

from ticketing.supervisor import Supervisor, parse_scale

SERVICES = ("inventory", "payment", "mailer", "ops", "search", "gateway")


def test_a_scale_spec_names_a_count_per_service() -> None:
    assert parse_scale("inventory=2, gateway=3") == {"inventory": 2, "gateway": 3}
    assert parse_scale("") == {}


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("inventory=0", "at least one"),
        ("inventory", "SERVICE=COUNT"),
        ("inventory=two", "SERVICE=COUNT"),
        ("warehouse=2", "not a service"),
    ],
)
def test_a_bad_scale_spec_says_what_is_wrong(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_scale(spec, SERVICES)


def test_replica_k_of_a_consumer_gets_port_plus_100_per_replica_and_the_first_is_unchanged() -> None:
    env = {"TICKETING_INVENTORY_PORT": "9100", "TICKETING_GATEWAY_PORT": "9000", "OTHER": "x"}
    sup = Supervisor(env=env, services=SERVICES, scale={"inventory": 3, "gateway": 2})
    assert sup.replicas("inventory") == ["inventory", "inventory-2", "inventory-3"]
    assert sup.replicas("payment") == ["payment"]
    ports = [sup.process_env(n)["TICKETING_INVENTORY_PORT"] for n in sup.replicas("inventory")]
    assert ports == ["9100", "9200", "9300"]
    assert sup.process_env("inventory-2")["OTHER"] == "x"
    assert sup.process_env("inventory-3")["TICKETING_REPLICA"] == "inventory-3"
    # Gateways share their port (SO_REUSEPORT), which only a scaled gateway asks for.
    for name in sup.replicas("gateway"):
        assert sup.process_env(name)["TICKETING_GATEWAY_PORT"] == "9000"
        assert sup.process_env(name)["TICKETING_GATEWAY_REUSE_PORT"] == "true"
    assert "TICKETING_GATEWAY_REUSE_PORT" not in Supervisor(env=env, services=SERVICES).process_env("gateway")


def test_an_unset_port_counts_from_the_settings_default_and_an_off_port_stays_off() -> None:
    sup = Supervisor(env={"TICKETING_MAILER_PORT": "0"}, services=SERVICES, scale={"search": 2, "mailer": 2})
    # 8204, not 8105 (the simulator's port): the default ports are consecutive.
    assert sup.process_env("search-2")["TICKETING_SEARCH_PORT"] == "8204"
    assert sup.process_env("mailer-2")["TICKETING_MAILER_PORT"] == "0"
