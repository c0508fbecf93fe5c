"""Score cache for selection: per-record vectors (embeddings, JSD, NLL) stored
as safetensors shards keyed by record id + content digest, so an interrupted
or re-parameterised selection reuses what was already computed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def record_key(rec: dict[str, Any], text: str) -> str:
    """``<id>#<sha1 of the scored text>``: a changed record is scored again."""
    return f"{rec['id']}#{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"


def fingerprint(folder: Path) -> str:
    """Short content fingerprint of a model folder: config and tokenizer bytes,
    weights hashed fully up to 256 MiB, by name, size and mtime above that."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).iterdir()):
        if not f.is_file() or f.name.startswith(".") or f.name == "carp.json":
            continue
        st = f.stat()
        h.update(f.name.encode())
        if st.st_size <= 256 * 2**20:
            h.update(f.read_bytes())
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class ScoreCache:
    """Append-only shards ``shard-*.safetensors`` of float32 rows of width
    ``dim`` (None: taken from the first shard); the keys ride in the
    safetensors metadata. A shard is written to a temporary name and renamed,
    so a killed run never leaves a torn shard."""

    def __init__(self, folder: Path, dim: int | None) -> None:
        from safetensors.numpy import load_file, safe_open

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.rows: dict[str, np.ndarray] = {}
        self._n = 0
        for f in sorted(self.folder.glob("shard-*.safetensors")):
            with safe_open(str(f), framework="numpy") as sf:
                keys = json.loads(sf.metadata()["keys"])
            vals = load_file(str(f))["values"]
            self.dim = self.dim or int(vals.shape[1])  # None: the shards decide
            if vals.shape[1] != self.dim:
                continue
            self.rows.update(zip(keys, vals, strict=True))
            self._n += 1

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Rows for ``keys`` (N, dim), NaN where missing, and the missing positions."""
        if self.dim is None:
            raise ValueError(f"{self.folder}: cache width unknown; pass dim")
        out = np.full((len(keys), self.dim), np.nan, dtype=np.float32)
        missing = []
        for i, k in enumerate(keys):
            row = self.rows.get(k)
            if row is None:
                missing.append(i)
            else:
                out[i] = row
        return out, missing

    def add(self, keys: Sequence[str], values: np.ndarray) -> None:
        """Persist a batch of rows as a new shard."""
        from safetensors.numpy import save_file

        if not len(keys):
            return
        vals = np.ascontiguousarray(values, dtype=np.float32)
        vals = vals.reshape(len(keys), self.dim)
        name = self.folder / f"shard-{os.getpid()}-{self._n:06d}.safetensors"
        tmp = name.with_suffix(".tmp")
        save_file({"values": vals}, str(tmp), metadata={"keys": json.dumps(list(keys))})
        os.replace(tmp, name)
        self._n += 1
        self.rows.update(zip(keys, vals, strict=True))
