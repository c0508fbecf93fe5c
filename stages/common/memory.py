"""Peak resident memory of this process (stage metrics, benchmarks)."""

from __future__ import annotations

import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB: VmHWM of its own
    address space (ru_maxrss would include a forking parent's RSS)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
