"""Pure scoring functions: exact match, token log-likelihood, rolling windows.

Rolling windows follow lm-evaluation-harness ``loglikelihood_rolling``
(``get_rolling_token_windows`` + ``make_disjoint_window``): every token of a
document is predicted exactly once, with up to ``max_len`` tokens of context.
Word and byte counts follow lm-eval's ``Task.count_words`` / ``count_bytes``
and its ``weighted_perplexity`` / ``bits_per_byte`` aggregations.
"""

from __future__ import annotations

import math
import re
from typing import Any


def normalize_answer(text: str) -> str:
    """A generation up to its first newline, stripped (lm-eval's ``until: ["\\n"]``)."""
    return text.split("\n", 1)[0].strip()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised prediction equals the stripped reference, else 0.0."""
    return float(normalize_answer(prediction) == reference.strip())


def rolling_windows(
    tokens: list[int], prefix_token: int, max_len: int, context_len: int = 1
) -> list[tuple[list[int], list[int]]]:
    """Disjoint ``(context, continuation)`` windows covering ``tokens``.

    The first window predicts the first ``max_len`` tokens after ``prefix_token``;
    each later window predicts up to ``max_len - context_len + 1`` new tokens
    with the preceding tokens as context. ``len(context + continuation) - 1 <=
    max_len`` always holds (the model input is ``(context + continuation)[:-1]``).
    """
    if not 1 <= context_len <= max_len:
        raise ValueError(f"context_len must be in [1, max_len={max_len}]")
    if not tokens:
        return []
    pred_len = max_len - context_len + 1
    first = min(max_len, len(tokens))
    windows = [([prefix_token], tokens[:first])]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, pred_len)
        end = done + n
        context = tokens[max(0, end - max_len - 1) : end - n]
        windows.append((context, tokens[end - n : end]))
        done = end
    return windows


def continuation_nll(logits: Any, targets: list[list[int]], lengths: list[int]) -> Any:
    """Summed negative log-likelihood of each row's continuation tokens.

    ``logits`` (B, T, V) come from right-padded inputs ``(context +
    continuation)[:-1]``; row b has ``lengths[b]`` real positions and its last
    ``len(targets[b])`` positions predict ``targets[b]``. Returns float64 (B,).
    """
    import torch

    out = torch.zeros(len(lengths), dtype=torch.float64)
    for b, (tgt, length) in enumerate(zip(targets, lengths, strict=True)):
        # one row's scored positions at a time: (n, V) in float64, not (B, T, V)
        preds = torch.log_softmax(logits[b, length - len(tgt) : length].double(), -1)
        idx = torch.tensor(tgt, dtype=torch.long, device=preds.device)[:, None]
        out[b] = -preds.gather(-1, idx).sum().cpu()
    return out


def perplexity(total_nll: float, n_tokens: int) -> float:
    """exp(summed NLL / count); nan when nothing was scored. Over tokens: token
    perplexity; over words: lm-eval's ``word_perplexity`` (``weighted_perplexity``),
    comparable across tokenizers."""
    return math.exp(total_nll / n_tokens) if n_tokens else float("nan")


def count_words(text: str) -> int:
    """Words of a scored text as lm-eval counts them: ``len(re.split(r"\\s+", t))``."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    """UTF-8 bytes of a scored text (lm-eval ``count_bytes``)."""
    return len(text.encode("utf-8"))


def bits_per_byte(total_nll: float, n_bytes: int) -> float:
    """Summed NLL in bits per UTF-8 byte (lm-eval ``bits_per_byte``)."""
    return total_nll / n_bytes / math.log(2) if n_bytes else float("nan")


def paper_windows(ids: list[int], seqlen: int) -> list[list[int]]:
    """Wanda/SparseGPT ``eval_ppl``'s windows: ``len(ids) // seqlen``
    non-overlapping windows of ``seqlen`` tokens of the once-tokenized text,
    the tail dropped, no per-window bos."""
    if seqlen < 2:
        raise ValueError("seqlen must be at least 2")
    return [ids[i * seqlen : (i + 1) * seqlen] for i in range(len(ids) // seqlen)]


def truncate_at(text: str, until: list[str] | tuple[str, ...]) -> str:
    """``text`` up to the first of the stop strings (lm-eval's ``until``)."""
    cut = min((i for s in until if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


_PUNCT = re.compile(r"[^\w\s]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# exact-match normalisation steps, applied in the declared order to both the
# prediction and the reference (``lower``, ``punctuation``, ``articles`` and
# ``whitespace`` are SQuAD's normalize_answer, step by step)
NORMALIZERS = {
    "strip": str.strip,
    "first_line": lambda t: t.strip().split("\n", 1)[0],
    "lower": str.lower,
    "punctuation": lambda t: _PUNCT.sub("", t),
    "articles": lambda t: _ARTICLES.sub(" ", t),
    "whitespace": lambda t: " ".join(t.split()),
}


def normalize(text: str, steps: list[str] | tuple[str, ...]) -> str:
    """``text`` through the named ``NORMALIZERS`` steps, in order."""
    for s in steps:
        text = NORMALIZERS[s](text)
    return text
