"""schemathesis against the running system's three HTTP APIs: every check, every phase.

Each API is fuzzed from its own OpenAPI document (examples, coverage, fuzzing, and the
stateful phase that follows the documents' links, e.g. POST /orders then GET and cancel that
order). A failure prints schemathesis' report: the failing case and the curl that reproduces it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from saga_harness.system import System

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 30
SEED = 20261202

# Rules that depend on stored state or that no JSON Schema keyword can state. For these
# operations alone a schema-valid request may also get the status named, never anything else
# (every other check stays on). Each of these 422s names its field.
CONFIG = """
[[operations]]
# The e-mail's domain must convert with IDNA to an ASCII hostname: the pattern states the
# shape, the field's description the rest. (tests/integration/test_orders_api.py checks that
# every other text field's schema states exactly what the server accepts.)
# A customer_id in the body must be the token's customer (403 otherwise).
include-operation-id = "submitOrder"
checks.positive_data_acceptance.expected-statuses = ["2xx", "403", "409", "422"]

[[operations]]
# A cursor is opaque: only a next_cursor the server issued is one. A customer lists only
# their own orders (another customer_id is a 403).
include-operation-id = "listOrders"
checks.positive_data_acceptance.expected-statuses = ["2xx", "403", "422"]

[[operations]]
# name and price_cents are required only to create a product that does not exist yet.
include-operation-id = "putProduct"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "422"]

[[operations]]
# A refund may not exceed the charge it refunds.
include-operation-id = "createRefund"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409", "422"]
"""


def schemathesis(config: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--report-dir",
        str(config.parent / "report"),
        *extra,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=config.parent, check=False
    )


@pytest.mark.parametrize("api", ["orders", "stock", "provider"])
def test_schemathesis_finds_no_failure(system: System, api: str, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    url = {"orders": system.orders_url, "stock": system.stock_url, "provider": system.provider_url}
    # Each API with the credential its client has: a customer's token, an operator's, the
    # merchant's key. Every operation is also sent without it (schemathesis' auth checks).
    credential = {
        "orders": system.tokens.customer("fuzz-customer"),
        "stock": system.tokens.operator("fuzzer"),
        "provider": system.provider_headers,
    }[api]
    result = schemathesis(
        config, url[api], "--header", f"Authorization: {credential['Authorization']}"
    )
    report = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, report
    # Every phase that can run ran and passed (examples are skipped: the documents give none).
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅\s+{phase}", report), f"{phase} did not pass\n{report}"
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated is not None, report
    assert generated[1] == generated[2], report
