"""Word and character error rates with substitution / deletion / insertion counts.

Both sides are normalized with ``rnnt.text.normalize`` before scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from rnnt.text import normalize


@dataclass(frozen=True)
class ErrorCounts:
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Errors / reference length (0 for an empty reference with no insertions)."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else 1.0
        return self.errors / self.reference_length

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(self.substitutions + other.substitutions, self.deletions + other.deletions,
                           self.insertions + other.insertions, self.reference_length + other.reference_length)


def align_counts(ref: Sequence, hyp: Sequence) -> ErrorCounts:
    """Levenshtein alignment of two sequences -> S, D, I counts (ties prefer substitutions)."""
    # dp[j] = (cost, S, D, I) for ref[:i] vs hyp[:j]
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            if ref[i - 1] == hyp[j - 1]:
                best = prev[j - 1]
            else:
                s, d, n = prev[j - 1], prev[j], cur[j - 1]
                best = min((s[0] + 1, s[1] + 1, s[2], s[3]), (d[0] + 1, d[1], d[2] + 1, d[3]),
                           (n[0] + 1, n[1], n[2], n[3] + 1))
            cur.append(best)
        prev = cur
    _, s, d, n = prev[-1]
    return ErrorCounts(s, d, n, len(ref))


def word_errors(ref: str, hyp: str) -> ErrorCounts:
    return align_counts(normalize(ref).split(), normalize(hyp).split())


def char_errors(ref: str, hyp: str) -> ErrorCounts:
    return align_counts(list(normalize(ref).replace(" ", "")), list(normalize(hyp).replace(" ", "")))


def corpus_wer(refs: Iterable[str], hyps: Iterable[str]) -> ErrorCounts:
    total = ErrorCounts()
    for r, h in zip(refs, hyps):
        total = total + word_errors(r, h)
    return total


def corpus_cer(refs: Iterable[str], hyps: Iterable[str]) -> ErrorCounts:
    total = ErrorCounts()
    for r, h in zip(refs, hyps):
        total = total + char_errors(r, h)
    return total
