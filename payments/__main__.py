from saga_runtime import run_service
from saga_system import SYSTEM

raise SystemExit(run_service(SYSTEM, "payments"))
