"""A token n-gram language model for shallow fusion in beam search.

Legend: V vocabulary (the transducer's, blank included), n the order, k a context length (0..n-1).

Built from normalized sentences encoded with the model's tokenizer, with interpolated Kneser-Ney
smoothing (one absolute discount per order, continuation counts below the top order), and stored in
backoff form: for every context seen in training, the log-probabilities of the tokens that followed it
and a backoff log-weight for all others. The blank id stands for the sentence start and is never
predicted. N-grams of order 3 and up seen fewer than ``min_count`` times are dropped and their mass goes
to the backoff, which keeps every distribution normalized.

The file is a compressed ``.npz``: ``order``, ``vocab_size``, ``tokenizer_sha1``, ``unigram`` (V,) and per
context length k >= 1 the arrays ``ctx{k}`` (C_k, k), ``off{k}`` (C_k + 1), ``tok{k}``, ``logp{k}`` and
``bow{k}`` (C_k).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from typing import Iterable

import numpy as np

from rnnt.errors import CheckpointError, DataError

BOS = 0  # the blank id marks the sentence start; the transducer never emits it as a token


class NgramLM:
    """Log-probabilities of the next token given the previous ones, cached per context."""

    def __init__(self, order: int, vocab_size: int, unigram: np.ndarray,
                 tables: list["ContextTable"], tokenizer_sha1: str = "") -> None:
        self.order = order
        self.vocab_size = vocab_size
        self.unigram = unigram.astype(np.float32)
        self.tables = tables  # tables[k - 1]: the contexts of length k
        self.tokenizer_sha1 = tokenizer_sha1
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    def start(self) -> tuple[int, ...]:
        """The context at the start of an utterance."""
        return (BOS,)

    def advance(self, context: tuple[int, ...], token: int) -> tuple[int, ...]:
        """The context after ``token`` (the last n - 1 tokens)."""
        return (context + (token,))[-(self.order - 1):] if self.order > 1 else ()

    def logprobs(self, context: tuple[int, ...]) -> np.ndarray:
        """(V,) float32 natural-log probabilities of each next token; blank gets -inf."""
        out = self._cache.get(context)
        if out is not None:
            return out
        d = self.unigram.copy()
        for k in range(1, min(len(context), self.order - 1) + 1):
            entry = self.tables[k - 1].get(context[-k:])
            if entry is None:  # unseen context: its distribution is the shorter one's
                continue
            toks, lp, bow = entry
            d += bow
            d[toks] = lp
        d[BOS] = -np.inf
        if len(self._cache) > 20_000:  # 1 KB a context at V = 256
            self._cache.clear()
        self._cache[context] = d
        return d

    def score(self, ids: list[int]) -> float:
        """Total natural-log probability of one token sequence (from the sentence start)."""
        ctx, total = self.start(), 0.0
        for t in ids:
            total += float(self.logprobs(ctx)[t])
            ctx = self.advance(ctx, t)
        return total

    # ---- build, save, load ----

    @classmethod
    def build(cls, sequences: Iterable[list[int]], order: int, vocab_size: int, min_count: int = 2,
              tokenizer_sha1: str = "") -> "NgramLM":
        """Count n-grams of ``sequences`` (token ids, no blank) and smooth them (interpolated Kneser-Ney)."""
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        counts: list[Counter] = [Counter() for _ in range(order)]  # counts[m - 1]: m-grams
        for ids in sequences:
            seq = [BOS] + list(ids)
            for i in range(1, len(seq)):
                for m in range(1, order + 1):
                    if i - m + 1 < 0:
                        break
                    counts[m - 1][tuple(seq[i - m + 1 : i + 1])] += 1
        # Kneser-Ney: an m-gram below the top order counts the distinct tokens seen before it, except
        # m-grams that begin at the sentence start, which have no left context and keep their raw count.
        adjusted: list[Counter] = [Counter() for _ in range(order)]
        adjusted[order - 1] = counts[order - 1]
        for m in range(order - 1, 0, -1):
            cc = adjusted[m - 1]
            for gram in counts[m]:
                cc[gram[1:]] += 1
            for gram, c in counts[m - 1].items():
                if gram[0] == BOS:
                    cc[gram] += c
        # Drop rare n-grams of order >= 3 (their mass joins the backoff of their context).
        kept: list[dict] = []
        pruned_mass: list[Counter] = []
        for m in range(1, order + 1):
            keep, lost = {}, Counter()
            for gram, c in adjusted[m - 1].items():
                if m >= 3 and counts[m - 1][gram] < min_count:
                    lost[gram[:-1]] += c
                else:
                    keep[gram] = c
            kept.append(keep)
            pruned_mass.append(lost)
        # Unigram: discounted continuation counts plus a uniform floor over the V - 1 real tokens.
        V = vocab_size
        uni_counts = np.zeros(V, np.float64)
        for (t,), c in kept[0].items():
            uni_counts[t] += c
        D = _discount(kept[0].values())
        total = uni_counts.sum()
        floor = np.full(V, 1.0 / (V - 1))
        floor[BOS] = 0.0
        if total > 0:
            seen = uni_counts > 0
            p = np.maximum(uni_counts - D, 0) / total + D * seen.sum() / total * floor
        else:
            p = floor
        with np.errstate(divide="ignore"):
            unigram = np.log(p)
        unigram[BOS] = -np.inf
        lm = cls(order, V, unigram.astype(np.float32), [], tokenizer_sha1)
        for m in range(2, order + 1):
            by_ctx: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
            for gram, c in kept[m - 1].items():
                by_ctx[gram[:-1]].append((gram[-1], c))
            # A context whose every continuation was dropped would back off with weight 1, exactly as an
            # unseen one does: it is not stored.
            D = _discount(kept[m - 1].values())
            table: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, float]] = {}
            for ctx, items in by_ctx.items():
                lost = pruned_mass[m - 1].get(ctx, 0)
                denom = sum(c for _, c in items) + lost
                gamma = (D * len(items) + lost) / denom
                lower = lm.logprobs(ctx[1:]) if m > 2 else lm.unigram
                toks = np.array([t for t, _ in items], np.int64)
                cs = np.array([c for _, c in items], np.float64)
                lp = np.log(np.maximum(cs - D, 0) / denom + gamma * np.exp(lower[toks].astype(np.float64)))
                table[ctx] = (toks, lp.astype(np.float32), float(np.log(gamma)) if gamma > 0 else -np.inf)
            lm.tables.append(ContextTable.from_dict(table, m - 1, V))
            lm._cache.clear()
        return lm

    def save(self, path: str) -> None:
        arrays = {"order": np.array(self.order), "vocab_size": np.array(self.vocab_size),
                  "tokenizer_sha1": np.array(self.tokenizer_sha1), "unigram": self.unigram}
        for k, table in enumerate(self.tables, start=1):
            arrays.update({f"{name}{k}": a for name, a in table.arrays().items()})
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    @staticmethod
    def check_header(path: str, tokenizer_sha1: str = "", vocab_size: int = 0) -> None:
        """Raise ``CheckpointError`` unless ``path`` is a language model for this tokenizer and vocabulary
        (reads only the small header arrays)."""
        _check_readable(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                V, sha = int(z["vocab_size"]), str(z["tokenizer_sha1"])
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise CheckpointError(f"{path} is not a language model written by cli.train_lm ({e})") from e
        _check_fit(path, V, sha, tokenizer_sha1, vocab_size)

    @classmethod
    def load(cls, path: str, tokenizer_sha1: str = "", vocab_size: int = 0) -> "NgramLM":
        """Load a saved model; a tokenizer hash or vocabulary size that differs is a ``CheckpointError``."""
        _check_readable(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            order, V = int(data["order"]), int(data["vocab_size"])
            sha, unigram = str(data["tokenizer_sha1"]), data["unigram"]
            tables = [ContextTable(data[f"ctx{k}"], data[f"off{k}"], data[f"tok{k}"], data[f"logp{k}"],
                                   data[f"bow{k}"], V) for k in range(1, order)]
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise CheckpointError(f"{path} is not a language model written by cli.train_lm ({e})") from e
        _check_fit(path, V, sha, tokenizer_sha1, vocab_size)
        return cls(order, V, unigram, tables, sha)


class ContextTable:
    """The contexts of one length k, packed in arrays and found by binary search on an integer key.

    Context ``i`` (row ``ctx[i]``) is followed by tokens ``tok[off[i]:off[i + 1]]`` with log-probabilities
    ``logp[...]``; ``bow[i]`` is its backoff log-weight. A dict of tuples took 1.8 GB and 5 s to load for
    three million contexts; these arrays take a tenth of that.
    """

    def __init__(self, ctx: np.ndarray, off: np.ndarray, tok: np.ndarray, logp: np.ndarray, bow: np.ndarray,
                 vocab_size: int) -> None:
        self.ctx = np.asarray(ctx, np.uint16)  # (C, k)
        self.off = np.asarray(off, np.int64)
        self.tok = np.asarray(tok, np.uint16)
        self.logp = np.asarray(logp, np.float32)
        self.bow = np.asarray(bow, np.float32)
        self.vocab_size = vocab_size
        k = self.ctx.shape[1]
        if vocab_size ** k >= 2**63:
            raise CheckpointError(f"contexts of {k} tokens over {vocab_size} do not fit a 64-bit key")
        self._weights = vocab_size ** np.arange(k, dtype=np.int64)
        keys = self.ctx.astype(np.int64) @ self._weights if len(self.ctx) else np.zeros(0, np.int64)
        self._order = np.argsort(keys, kind="stable")
        self._keys = keys[self._order]

    @classmethod
    def from_dict(cls, table: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, float]], k: int,
                  vocab_size: int) -> "ContextTable":
        ctxs = list(table)
        lens = [len(table[c][0]) for c in ctxs]
        return cls(np.array(ctxs, np.int64).reshape(len(ctxs), k),
                   np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                   _joined([table[c][0] for c in ctxs]), _joined([table[c][1] for c in ctxs]),
                   np.array([table[c][2] for c in ctxs], np.float32), vocab_size)

    def __len__(self) -> int:
        return len(self.ctx)

    def get(self, context: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, float] | None:
        """(tokens, log-probs, backoff log-weight) after ``context``, or None if it was never seen."""
        key = 0
        for i, t in enumerate(context):
            key += int(t) * int(self._weights[i])
        j = int(np.searchsorted(self._keys, key))
        if j == len(self._keys) or self._keys[j] != key:
            return None
        i = int(self._order[j])
        a, b = self.off[i], self.off[i + 1]
        return self.tok[a:b], self.logp[a:b], float(self.bow[i])

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays ``save`` stores: ctx, off, tok, logp, bow."""
        return {"ctx": self.ctx, "off": self.off, "tok": self.tok, "logp": self.logp,
                "bow": self.bow}


def _check_readable(path: str) -> None:
    if not os.path.isfile(path):
        raise CheckpointError(f"language model {path} does not exist")


def _check_fit(path: str, V: int, sha: str, tokenizer_sha1: str, vocab_size: int) -> None:
    if vocab_size and V != vocab_size:
        raise CheckpointError(f"language model {path} has {V} tokens but the model outputs {vocab_size}")
    if tokenizer_sha1 and sha and sha != tokenizer_sha1:
        raise CheckpointError(f"language model {path} was built with another tokenizer than the model's")


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


def _discount(values: Iterable[int]) -> float:
    """Absolute discount D = n1 / (n1 + 2 n2) from the counts of counts (0.5 when undefined)."""
    n1 = n2 = 0
    for c in values:
        n1 += c == 1
        n2 += c == 2
    return n1 / (n1 + 2 * n2) if n1 > 0 and n2 > 0 else 0.5


def read_sentences(path: str) -> list[str]:
    """The sentences of a ``.jsonl`` manifest (``text`` fields), a ``.tsv`` (last column) or a text file."""
    if not os.path.isfile(path):
        raise DataError(f"text file {path} does not exist")
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if path.endswith(".jsonl"):
                try:
                    out.append(str(json.loads(line)["text"]))
                except (ValueError, KeyError, TypeError) as e:
                    raise DataError(f"{path}:{n}: not a manifest line with a 'text' field") from e
            else:
                out.append(line.rstrip("\n").split("\t")[-1])
    return out
