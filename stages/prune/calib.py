"""Calibration token sequences from a dataset artifact, with a fingerprint.

Two formats (``calib_format``):

* ``records`` (default): each sample is one record rendered with the project's
  one template (stages/common/text.py) from BOS, as the model saw its training
  examples, at most ``seqlen`` tokens (default: the model's context, read from
  its config). Samples are right-padded to the longest; ``valid`` marks the real
  tokens, and only those feed the statistics (causal attention: a real token
  never sees the padding after it).
* ``windows``: records concatenated and cut into ``nsamples`` windows of
  ``seqlen`` tokens, as Wanda/SparseGPT cut C4 documents into 2048-token
  windows (for corpora of long documents).

Records are shuffled by seed either way.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

FORMATS = ("records", "windows")


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


def pad_records(seqs: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """(ids, valid): right-padded (n, longest) LongTensor and its bool mask of
    real tokens."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    valid = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        valid[i, : len(s)] = True
    return ids, valid


class Calibration:
    """Lazily built calibration samples (``samples()``), so methods that need
    none (magnitude, width l1/l2) never read or tokenize anything."""

    def __init__(
        self,
        folder: Path | None,
        tokenizer: Any,
        nsamples: int,
        seqlen: int,
        seed: int,
        fmt: str = "records",
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"calib_format: '{fmt}' is not one of {FORMATS}")
        self.folder = folder
        self.tokenizer = tokenizer
        self.nsamples = nsamples
        self.seqlen = seqlen
        self.seed = seed
        self.fmt = fmt
        self._samples: Any = None
        self.fingerprint: dict[str, Any] | None = None

    def samples(self, method: str) -> tuple[Any, Any]:
        """(ids, valid): (nsamples, T) LongTensor and bool mask of real tokens
        (all True for windows); raises naming ``calib`` when absent."""
        if self._samples is None:
            self._samples = self._build(method)
        return self._samples

    def release(self) -> None:
        """Drop the samples (the fingerprint stays)."""
        self._samples = None

    def _records(self, method: str) -> list[dict[str, Any]]:
        from stages.common.io import read_dataset

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
        if not records:
            raise ValueError(f"calib: {self.folder}/data.jsonl has no records")
        random.Random(self.seed).shuffle(records)
        return records

    def _build(self, method: str) -> tuple[Any, Any]:
        import torch

        from stages.common.text import encode_example

        records = self._records(method)
        tok = self.tokenizer
        if self.fmt == "records":
            seqs = [
                encode_example(tok, r, max_len=self.seqlen)[0]
                for r in records[: self.nsamples]
            ]
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            ids, valid = pad_records(seqs, pad)
            used = len(seqs)
        else:
            need, have, streams = self.nsamples * self.seqlen, 0, []
            for r in records:
                streams.append(encode_example(tok, r, max_len=self.seqlen)[0])
                have += len(streams[-1])
                if have >= need:
                    break
            windows = token_windows(streams, self.nsamples, self.seqlen, self.seed)
            ids = torch.tensor(windows, dtype=torch.long)
            valid = torch.ones_like(ids, dtype=torch.bool)
            used = len(streams)
        self.fingerprint = {
            "dataset": Path(self.folder).name,
            "dataset_sha256": _data_sha(Path(self.folder)),
            "format": self.fmt,
            "records_used": used,
            "samples": len(ids),
            "tokens": int(valid.sum()),
            "nsamples": self.nsamples,
            "seqlen": self.seqlen,
            "seed": self.seed,
            "tokens_sha256": hashlib.sha256(ids.numpy().tobytes()).hexdigest(),
        }
        return ids, valid


def _data_sha(folder: Path) -> str:
    from stages.common.io import DATA_FILE, DATASET_META

    meta_file = folder / DATASET_META
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    return (
        meta.get("sha256")
        or hashlib.sha256((folder / DATA_FILE).read_bytes()).hexdigest()
    )
