"""Calibration token sequences from a dataset artifact, with a fingerprint.

Records are formatted with the project's one template (stages/common/text.py),
shuffled by seed, concatenated and cut into ``nsamples`` windows of ``seqlen``
tokens, as Wanda/SparseGPT cut C4 documents into 2048-token windows.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any


def token_windows(
    streams: list[list[int]], nsamples: int, seqlen: int, seed: int
) -> list[list[int]]:
    """Concatenate token lists and cut ``nsamples`` windows of ``seqlen``;
    non-overlapping when the text is long enough, random offsets otherwise."""
    flat = [t for s in streams for t in s]
    if len(flat) < seqlen:
        raise ValueError(
            f"seqlen: calibration data has {len(flat)} tokens, fewer than "
            f"seqlen={seqlen}; lower seqlen or give a larger dataset"
        )
    if len(flat) >= nsamples * seqlen:
        return [flat[i * seqlen : (i + 1) * seqlen] for i in range(nsamples)]
    rng = random.Random(seed)
    starts = [rng.randrange(len(flat) - seqlen + 1) for _ in range(nsamples)]
    return [flat[s : s + seqlen] for s in starts]


class Calibration:
    """Lazily built calibration ids (``ids()``), so methods that need none
    (magnitude, width l1/l2) never read or tokenize anything."""

    def __init__(
        self, folder: Path | None, tokenizer: Any, nsamples: int, seqlen: int, seed: int
    ) -> None:
        self.folder = folder
        self.tokenizer = tokenizer
        self.nsamples = nsamples
        self.seqlen = seqlen
        self.seed = seed
        self._ids: Any = None
        self.fingerprint: dict[str, Any] | None = None

    def ids(self, method: str) -> Any:
        """(nsamples, seqlen) LongTensor; raises naming ``calib`` when absent."""
        if self._ids is None:
            self._ids = self._build(method)
        return self._ids

    def _build(self, method: str) -> Any:
        import torch

        from stages.common.io import DATA_FILE, DATASET_META, read_dataset
        from stages.common.text import encode_example

        if self.folder is None:
            raise ValueError(
                f"calib: {method} needs calibration data; set `calib:` to a dataset "
                "stage (e.g. the world stage, whose pool is a dataset)"
            )
        if self.tokenizer is None:
            raise ValueError(
                f"model: {method} tokenizes calibration records with the model's "
                "tokenizer, but the model folder has none"
            )
        records = read_dataset(self.folder)
        order = list(range(len(records)))
        random.Random(self.seed).shuffle(order)
        need, have, streams = self.nsamples * self.seqlen, 0, []
        for i in order:
            ids, _ = encode_example(self.tokenizer, records[i], max_len=self.seqlen)
            streams.append(ids)
            have += len(ids)
            if have >= need:
                break
        windows = token_windows(streams, self.nsamples, self.seqlen, self.seed)
        ids_t = torch.tensor(windows, dtype=torch.long)
        meta_file = Path(self.folder) / DATASET_META
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        data_sha = (
            meta.get("sha256")
            or hashlib.sha256((Path(self.folder) / DATA_FILE).read_bytes()).hexdigest()
        )
        self.fingerprint = {
            "dataset": Path(self.folder).name,
            "dataset_sha256": data_sha,
            "records_used": len(streams),
            "nsamples": self.nsamples,
            "seqlen": self.seqlen,
            "seed": self.seed,
            "tokens_sha256": hashlib.sha256(ids_t.numpy().tobytes()).hexdigest(),
        }
        return ids_t
