"""Calibration token sequences from a dataset artifact, with a fingerprint.

A dataset artifact's ``dataset.json`` names its record ``shape``: instruction
(absent means instruction, as the world writes it), chat or text. Two formats
(``calib_format``; None picks windows for text, records otherwise):

* ``records`` (instruction, chat): each sample is one record rendered with the
  stage's template (``template``; None: the project's ``carp`` template of
  stages/common/text.py) from BOS, as the model saw its training examples, at
  most ``seqlen`` tokens (default: the model's context, read from its config).
  Samples are right-padded to the longest; ``valid`` marks the real tokens, and
  only those feed the statistics (causal attention: a real token never sees the
  padding after it). Records are shuffled by seed.
* ``windows``: ``nsamples`` windows of ``seqlen`` tokens. Text documents are
  cut as the Wanda/SparseGPT code cuts C4 (``get_c4``: a seeded random
  document until one is longer than ``seqlen`` tokens, then a random window of
  it; see :func:`document_windows`). Instruction and chat records are rendered,
  shuffled by seed, concatenated and cut (:func:`token_windows`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMATS = ("records", "windows")
SHAPES = ("instruction", "chat", "text")
# get_c4 redraws until it hits a long enough document; after max(this, the
# number of documents) misses in a row every document's length is measured
# once (at most as many tokenizations as the misses cost), so a corpus without
# one is an error instead of an endless loop
MISSES_BEFORE_SCAN = 64


def dataset_shape(folder: Path | None) -> str:
    """The ``shape`` field of ``folder``'s dataset.json (absent: instruction)."""
    from stages.common.io import DATASET_META

    if folder is None or not (Path(folder) / DATASET_META).exists():
        return "instruction"
    meta_file = Path(folder) / DATASET_META
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"calib: {meta_file} is not valid JSON ({e}); re-run the stage that "
            "wrote the dataset"
        ) from None
    shape = meta.get("shape", "instruction") if isinstance(meta, dict) else None
    if shape not in SHAPES:
        raise ValueError(
            f"calib: {meta_file} field 'shape' is {shape!r}; use one of {SHAPES} "
            "(or leave it out for instruction records)"
        )
    return str(shape)


def resolve_format(fmt: str | None, shape: str) -> str:
    """The calibration format for a dataset of ``shape``: ``fmt``, or windows
    for text and records otherwise when ``fmt`` is None."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"calib_format: '{fmt}' is not one of {FORMATS}")
    if shape == "text":
        if fmt == "records":
            raise ValueError(
                "calib_format: 'records' renders instruction/chat records with a "
                "template, but the calib dataset holds text documents; use "
                "calib_format 'windows' or leave it unset"
            )
        return "windows"
    return fmt or "records"


def encode_record(
    tokenizer: Any, rec: dict[str, Any], max_len: int, template: str | None
) -> list[int]:
    """The one place calibration renders a record: token ids of ``rec`` with
    ``template`` (None: carp, the world's template)."""
    from stages.common.text import encode_example

    return encode_example(tokenizer, rec, max_len=max_len, template=template)[0]


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


class TooShortCorpus(ValueError):
    """No document of the corpus is longer than ``seqlen`` tokens."""


def document_windows(
    tokenize: Callable[[int], list[int]],
    ndocs: int,
    nsamples: int,
    seqlen: int,
    seed: int,
    scan_after: int | None = None,
) -> tuple[list[list[int]], list[int]]:
    """(windows, document indices): ``get_c4``'s sampling (Wanda ``lib/data.py``,
    SparseGPT ``datautils.py``) over documents ``0..ndocs-1``.

    With ``random.seed(seed)``, ``nsamples`` times: draw ``randint(0, ndocs-1)``
    until the document has more than ``seqlen`` tokens (``tokenize(index)``),
    then ``i = randint(0, len - seqlen - 1)`` and keep tokens ``[i, i+seqlen)``.
    A private ``random.Random(seed)`` draws the same numbers as the module's
    seeded functions. After ``scan_after`` misses in a row (default
    max(MISSES_BEFORE_SCAN, ndocs)) every length is measured once; raises
    :class:`TooShortCorpus` (with the longest length) when none is long enough.
    """
    if scan_after is None:
        scan_after = max(MISSES_BEFORE_SCAN, ndocs)
    rng = random.Random(seed)
    lengths: dict[int, int] = {}  # measured, so a short document is tokenized once
    scanned = False
    windows: list[list[int]] = []
    used: list[int] = []
    for _ in range(nsamples):
        misses = 0
        while True:
            d = rng.randint(0, ndocs - 1)
            if lengths.get(d, seqlen + 1) > seqlen:
                ids = tokenize(d)
                lengths[d] = len(ids)
                if len(ids) > seqlen:
                    break
            misses += 1
            if misses >= scan_after and not scanned:
                for j in range(ndocs):
                    if j not in lengths:
                        lengths[j] = len(tokenize(j))
                longest = max(lengths.values())
                if longest <= seqlen:
                    raise TooShortCorpus(longest)
                scanned = True
        i = rng.randint(0, len(ids) - seqlen - 1)
        windows.append(ids[i : i + seqlen])
        used.append(d)
    return windows, used


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
        fmt: str | None = None,
        template: str | None = None,
    ) -> None:
        self.shape = dataset_shape(folder)
        self.fmt = resolve_format(fmt, self.shape)
        self.folder = folder
        self.tokenizer = tokenizer
        self.nsamples = nsamples
        self.seqlen = seqlen
        self.seed = seed
        self.template = template
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

    def _check(self, method: str) -> None:
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

    def _nonempty(self, records: list[Any]) -> None:
        if not records:
            raise ValueError(f"calib: {self.folder}/data.jsonl has no records")

    def _build(self, method: str) -> tuple[Any, Any]:
        import torch

        self._check(method)
        if self.shape == "text":
            windows, used = self._document_windows()
            ids = torch.tensor(windows, dtype=torch.long)
            valid = torch.ones_like(ids, dtype=torch.bool)
            n_used = len(set(used))
        else:
            from stages.common.io import read_dataset

            records = read_dataset(self.folder)
            self._nonempty(records)
            random.Random(self.seed).shuffle(records)
            ids, valid, n_used = self._rendered(records)
        self.fingerprint = {
            "dataset": Path(self.folder).name,
            "dataset_sha256": _data_sha(Path(self.folder)),
            "shape": self.shape,
            "format": self.fmt,
            "records_used": n_used,
            "samples": len(ids),
            "tokens": int(valid.sum()),
            "nsamples": self.nsamples,
            "seqlen": self.seqlen,
            "seed": self.seed,
            "tokens_sha256": hashlib.sha256(ids.numpy().tobytes()).hexdigest(),
        }
        if self.shape != "text":
            self.fingerprint["template"] = self.template or "carp"
        return ids, valid

    def _encode(self, rec: dict[str, Any], row: int) -> list[int]:
        from stages.common.templates import record_shape

        if record_shape(rec) == "text":
            raise ValueError(
                f"calib: {self.folder}/data.jsonl record {row} (id "
                f"{rec.get('id', '?')!r}) is a text record {{id, text}} but the "
                f'dataset\'s shape is {self.shape}; set "shape": "text" in its '
                "dataset.json"
            )
        return encode_record(self.tokenizer, rec, self.seqlen, self.template)

    def _rendered(self, records: list[dict[str, Any]]) -> tuple[Any, Any, int]:
        """(ids, valid, records used) of shuffled instruction/chat records."""
        import torch

        tok = self.tokenizer
        if self.fmt == "records":
            seqs = [
                self._encode(r, n) for n, r in enumerate(records[: self.nsamples], 1)
            ]
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            ids, valid = pad_records(seqs, pad)
            return ids, valid, len(seqs)
        need, have, streams = self.nsamples * self.seqlen, 0, []
        for n, r in enumerate(records, 1):
            streams.append(self._encode(r, n))
            have += len(streams[-1])
            if have >= need:
                break
        windows = token_windows(streams, self.nsamples, self.seqlen, self.seed)
        ids = torch.tensor(windows, dtype=torch.long)
        return ids, torch.ones_like(ids, dtype=torch.bool), len(streams)

    def _document_windows(self) -> tuple[list[list[int]], list[int]]:
        """get_c4's windows over the records' ``text`` in file order (only the
        texts are held), each document tokenized as the reference does (with
        the tokenizer's default special tokens)."""
        from stages.common.io import DATA_FILE, read_jsonl

        data = Path(self.folder) / DATA_FILE
        if not data.exists():
            raise FileNotFoundError(
                f"{self.folder}: no {DATA_FILE}; is this a dataset artifact?"
            )
        docs = []
        for n, r in enumerate(read_jsonl(data), 1):
            if not isinstance(r.get("text"), str):
                raise ValueError(
                    f"calib: {data} record {n} (id {r.get('id', '?')!r}): field "
                    "'text' must be a string; a dataset of shape text holds "
                    "{id, text} records"
                )
            docs.append(r["text"])
        self._nonempty(docs)
        tok = self.tokenizer
        try:
            return document_windows(
                lambda i: list(tok(docs[i])["input_ids"]),
                len(docs),
                self.nsamples,
                self.seqlen,
                self.seed,
            )
        except TooShortCorpus as e:
            raise ValueError(
                f"calib: no document of {self.folder} is longer than seqlen="
                f"{self.seqlen} tokens (the longest has {e.args[0]}); lower "
                "`seqlen` or calibrate on a corpus of longer documents"
            ) from None


def _data_sha(folder: Path) -> str:
    from stages.common.io import DATA_FILE, DATASET_META

    meta_file = folder / DATASET_META
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    return (
        meta.get("sha256")
        or hashlib.sha256((folder / DATA_FILE).read_bytes()).hexdigest()
    )
