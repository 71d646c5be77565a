"""Where the golden /metrics files live, and what of an exposition is too volatile for them."""

from __future__ import annotations

import re
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "golden"
# Lines whose values depend on the machine or the moment, not on the GPUs.
VOLATILE = re.compile(
    r"^(process_|python_|infermeter_process_|infermeter_collector_duration_seconds|"
    r"infermeter_build_info)"
)
