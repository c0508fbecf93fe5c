"""Memory of this process: its peak resident set (stage metrics, benchmarks) and
releasing the pages of tensors it is done with."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


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


_MADV_PAGEOUT = 21  # linux/mman.h, Linux >= 5.4


def release_pages(t: Any, start: int = 0, stop: int | None = None) -> None:
    """Ask the kernel to reclaim the whole pages under a CPU tensor, or under
    its bytes ``start:stop`` (``MADV_PAGEOUT``). HF loaders map the checkpoint
    file, so a tensor nobody changed is clean file pages: dropped, they are read
    from the file again if touched. Changed (anonymous) pages are kept, or
    swapped out, never lost, so this is always safe; it only costs a re-read.
    Used on tensors already written or read for the last time (prune: streamed
    save, width's Taylor pass), so a pass over the model does not hold every
    page it touched. A no-op where madvise or PAGEOUT is not available."""
    import contextlib
    import ctypes
    import mmap

    if t.device.type != "cpu" or not t.numel():
        return
    page = mmap.PAGESIZE
    nbytes = t.numel() * t.element_size()
    stop = nbytes if stop is None else min(stop, nbytes)
    lo = -(-(t.data_ptr() + start) // page) * page  # whole pages inside only
    hi = (t.data_ptr() + stop) // page * page
    if hi <= lo:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_PAGEOUT)
