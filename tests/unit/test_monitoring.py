"""``./dev up``'s monitoring: every process gets a place to serve /metrics, and Prometheus's
configuration scrapes them all with the product's rules."""

from __future__ import annotations

from saga_harness.infra.prometheus import RULES, scrape_config
from saga_harness.monitoring import metrics_env, service_metrics_targets
from saga_runtime import composition_root
from saga_system import SYSTEM


def test_every_service_has_a_metrics_target_on_its_api_or_a_port_of_its_own() -> None:
    env = metrics_env({"PAYMENTS_METRICS_PORT": "9999"})
    targets = service_metrics_targets(env)
    assert set(targets) == set(SYSTEM.names)
    for name in SYSTEM.names:
        settings = composition_root(SYSTEM, name).Settings()
        api = getattr(settings, "port", None)
        port = api or int(env[f"{name.upper()}_METRICS_PORT"])
        assert targets[name] == f"127.0.0.1:{port}"
        assert (f"{name.upper()}_METRICS_PORT" in env) == (api is None)
    assert targets["payments"] == "127.0.0.1:9999"  # the environment's choice is kept
    assert len(set(targets.values())) == len(targets)


def test_the_configuration_scrapes_each_target_and_loads_the_rules() -> None:
    config = scrape_config(
        {"orders": "127.0.0.1:8000", "relay-a": "127.0.0.1:9030"}, rule_files=[RULES]
    )
    assert config["rule_files"] == [str(RULES)] and RULES.is_file()
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert jobs == {"orders": ["127.0.0.1:8000"], "relay-a": ["127.0.0.1:9030"]}
