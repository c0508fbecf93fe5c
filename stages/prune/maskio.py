"""Bit-packed keep-masks: see :mod:`stages.common.maskio` (shared with merge)."""

from stages.common.maskio import PackedMask, pack, write_masks

__all__ = ["PackedMask", "pack", "write_masks"]
