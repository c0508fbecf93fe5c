"""PASER's negative-transfer filter (He et al., arXiv 2502.12594): concepts are
RAKE key phrases (Rose et al., 2010) found with scikit-learn's bundled English
stop words (no NLTK download), and the Concept Consistency Graph rejects a
candidate two of whose concepts are both known but never co-occurred.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_TOKEN = re.compile(r"[a-z]+(?:['\-][a-z]+)*|\d+(?:\.\d+)?|[^\sa-z\d]")


def _stopwords() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def record_text(rec: dict[str, Any]) -> str:
    """Instruction, input and output joined (what the public code reads)."""
    return " ".join(
        str(rec.get(k) or "") for k in ("instruction", "input", "output")
    ).strip()


def extract_concepts(
    text: str, max_concepts: int | None = None, max_words: int = 3
) -> list[str]:
    """RAKE key phrases, best first: maximal runs of content words split at stop
    words, punctuation and numbers (instance values, not concepts), scored by
    the sum of word degree/frequency; at most ``max_concepts`` (None = all)."""
    stop = _stopwords()
    phrases: list[tuple[str, ...]] = []
    run: list[str] = []
    for tok in _TOKEN.findall(text.lower()):
        if tok[0].isalpha() and tok not in stop and len(tok) > 1:
            run.append(tok)
            continue
        if run:
            phrases.append(tuple(run))
        run = []
    if run:
        phrases.append(tuple(run))
    phrases = [
        p[i : i + max_words] for p in phrases for i in range(0, len(p), max_words)
    ]
    freq: dict[str, int] = {}
    degree: dict[str, int] = {}
    for p in phrases:
        for w in p:
            freq[w] = freq.get(w, 0) + 1
            degree[w] = degree.get(w, 0) + len(p)
    scored: dict[str, float] = {}
    for p in phrases:
        scored[" ".join(p)] = sum(degree[w] / freq[w] for w in p)
    ranked = sorted(scored, key=lambda c: (-scored[c], c))
    return ranked if max_concepts is None else ranked[:max_concepts]


class ConceptGraph:
    """The Concept Consistency Graph of a selection: vertices are concepts of
    accepted samples, edges join concepts that appeared in the same sample."""

    def __init__(self) -> None:
        self.adj: dict[str, set[str]] = {}

    def conflict(self, concepts: Iterable[str]) -> tuple[str, str] | None:
        """The first pair of concepts both in the graph but never co-occurring,
        or None when the candidate is consistent (and may be accepted)."""
        known = sorted({c for c in concepts if c in self.adj})
        for i, a in enumerate(known):
            for b in known[i + 1 :]:
                if b not in self.adj[a]:
                    return a, b
        return None

    def add(self, concepts: Iterable[str]) -> None:
        """Add an accepted sample: its concepts as vertices, a clique over them."""
        cs = set(concepts)
        for c in cs:
            self.adj.setdefault(c, set()).update(cs - {c})

    def __len__(self) -> int:
        return len(self.adj)
