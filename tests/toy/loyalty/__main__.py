from saga_runtime import run_service
from tests.toy.definition import SYSTEM_WITH_LOYALTY

raise SystemExit(run_service(SYSTEM_WITH_LOYALTY, "loyalty"))
