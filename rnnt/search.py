"""Greedy and beam transducer search over encoder frames, written against the ``Backend`` protocol.

Legend: B streams, T encoder frames, J joint width, V vocabulary with blank (id 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnnt.backend import Backend
from rnnt.state import LstmState, stack_states, unstack_states

BLANK = 0


@dataclass
class Hypothesis:
    """One stream's search state. ``pred_out``: (1, J) projected predictor output for the last token."""

    pred_state: LstmState
    pred_out: np.ndarray
    tokens: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)  # absolute encoder frame of each token


def init_hypothesis(backend: Backend) -> Hypothesis:
    """Predictor primed with the blank start token."""
    out, state = backend.predict(np.array([BLANK], dtype=np.int64), backend.init_predictor_state(1))
    return Hypothesis(pred_state=state, pred_out=out)


class GreedySearch:
    """``greedy_search`` behind the same calls as ``BeamSearch``: every token is stable at once."""

    def __init__(self, backend: Backend, max_symbols_per_frame: int) -> None:
        self.backend, self.max_symbols = backend, max_symbols_per_frame
        self.hyp = init_hypothesis(backend)

    def advance(self, enc: np.ndarray, first_frame: int) -> None:
        greedy_search(self.backend, enc, self.hyp, first_frame, self.max_symbols)

    def tokens(self) -> tuple[list[int], list[int]]:
        return self.hyp.tokens, self.hyp.frames

    def span(self, lo: int, hi: int) -> tuple[list[int], list[int]]:
        return self.hyp.tokens[lo:hi], self.hyp.frames[lo:hi]

    def last_frame(self) -> int | None:
        return self.hyp.frames[-1] if self.hyp.frames else None

    def length(self) -> int:
        return len(self.hyp.tokens)

    def stable_length(self) -> int:
        return len(self.hyp.tokens)

    def revision(self) -> int:
        """Changes whenever the best hypothesis does (greedy only ever appends)."""
        return len(self.hyp.tokens)


def greedy_search(backend: Backend, enc: np.ndarray, hyp: Hypothesis, first_frame: int,
                  max_symbols_per_frame: int) -> list[int]:
    """Extend ``hyp`` (in place; the caller owns it) over encoder frames ``enc`` (T, J).

    Emits at most ``max_symbols_per_frame`` tokens per frame. ``first_frame`` is the absolute index of
    ``enc[0]``. Returns the indices into ``hyp.tokens`` of the tokens added.
    """
    assert enc.ndim == 2, "enc must be (T, J)"
    start = len(hyp.tokens)
    for t in range(enc.shape[0]):
        frame = enc[t : t + 1]  # (1, J)
        for _ in range(max_symbols_per_frame):
            token = int(np.argmax(backend.join(frame, hyp.pred_out)[0]))
            if token == BLANK:
                break
            hyp.tokens.append(token)
            hyp.frames.append(first_frame + t)
            hyp.pred_out, hyp.pred_state = backend.predict(np.array([token], dtype=np.int64), hyp.pred_state)
    return list(range(start, len(hyp.tokens)))


# ---- beam search ----

@dataclass(frozen=True)
class _Node:
    """One token of a hypothesis, linked to the one before: hypotheses share their common prefix."""

    token: int
    frame: int  # absolute encoder frame
    parent: "_Node | None"
    length: int  # tokens up to and including this one
    key: int  # identifies the token sequence (a hash chain), so equal sequences merge


@dataclass
class BeamHypothesis:
    """One hypothesis of a beam. ``am``: transducer log-probability (alignments of the same tokens summed);
    ``lm``: language-model log-probability of the tokens."""

    node: _Node | None
    am: float
    lm: float
    lm_context: tuple[int, ...]
    pred_out: np.ndarray  # (1, J)
    pred_state: LstmState

    @property
    def length(self) -> int:
        return self.node.length if self.node else 0

    @property
    def key(self) -> int:
        return self.node.key if self.node else 0

    def tokens(self) -> tuple[list[int], list[int]]:
        """(token ids, absolute frames) from the first token on."""
        return _walk(self.node, 0)


class BeamSearch:
    """Transducer beam search with optional n-gram shallow fusion, carried across chunks.

    Per encoder frame, hypotheses either take blank (and are done with the frame) or one more token; a
    frame allows at most ``max_symbols_per_frame`` tokens. Hypotheses that reach the same tokens merge
    (their transducer probabilities add). The ranking score is ``am + lm_weight * lm + length_bonus *
    tokens``. Candidates scoring below the beam-th hypothesis already done with the frame are dropped. Without a language model both weights are 0.
    Tokens shared by every hypothesis (``stable_length``) can never change.
    """

    def __init__(self, backend: Backend, beam: int, max_symbols_per_frame: int, lm=None, lm_weight: float = 0.0,
                 length_bonus: float = 0.0) -> None:
        self.backend, self.beam, self.max_symbols = backend, beam, max_symbols_per_frame
        self.lm, self.lm_weight, self.length_bonus = lm, lm_weight if lm is not None else 0.0, (length_bonus if lm is not None else 0.0)
        out, state = backend.predict(np.array([BLANK], dtype=np.int64), backend.init_predictor_state(1))
        start = lm.start() if lm is not None else ()
        self.hyps = [BeamHypothesis(None, 0.0, 0.0, start, out, state)]

    def _score(self, h: BeamHypothesis) -> float:
        return h.am + self.lm_weight * h.lm + self.length_bonus * h.length

    @property
    def best(self) -> BeamHypothesis:
        return self.hyps[0]  # kept sorted by score

    def tokens(self) -> tuple[list[int], list[int]]:
        """The best hypothesis' (token ids, absolute frames)."""
        return self.best.tokens()

    def span(self, lo: int, hi: int) -> tuple[list[int], list[int]]:
        """Tokens ``lo .. hi`` of the best hypothesis, walking back only from ``hi``."""
        return _walk(_ancestor(self.best.node, hi), lo)

    def last_frame(self) -> int | None:
        node = self.best.node
        return node.frame if node else None

    def length(self) -> int:
        return self.best.length

    def revision(self) -> int:
        """Changes whenever the best hypothesis' tokens do (the hash of its token sequence)."""
        return self.best.key

    def stable_length(self) -> int:
        """How many leading tokens all hypotheses share."""
        nodes = [h.node for h in self.hyps]
        m = min(n.length if n else 0 for n in nodes)
        nodes = [_ancestor(n, m) for n in nodes]
        while m > 0 and len({n.key for n in nodes}) > 1:
            nodes = [n.parent for n in nodes]
            m -= 1
        return m

    def advance(self, enc: np.ndarray, first_frame: int) -> None:
        """Extend the beam over encoder frames ``enc`` (T, J); ``first_frame`` is the index of ``enc[0]``."""
        assert enc.ndim == 2, "enc must be (T, J)"
        for t in range(enc.shape[0]):
            self.hyps = self._frame(enc[t : t + 1], first_frame + t)

    def _frame(self, frame: np.ndarray, index: int) -> list[BeamHypothesis]:
        done: dict[int, BeamHypothesis] = {}
        active = self.hyps
        for step in range(self.max_symbols + 1):
            if step == self.max_symbols:  # the frame's last token: move on without blank, as greedy does
                for h in active:
                    _merge(done, h)
                break
            pred = np.concatenate([h.pred_out for h in active])  # (A, J)
            logits = self.backend.join(np.repeat(frame, len(active), 0), pred).astype(np.float64)  # (A, V)
            logp = logits - _logsumexp(logits)
            for i, h in enumerate(active):
                _merge(done, BeamHypothesis(h.node, h.am + logp[i, BLANK], h.lm, h.lm_context, h.pred_out,
                                            h.pred_state))
            scores = np.array([self._score(h) for h in active])[:, None] + logp + self.length_bonus  # (A, V)
            lm_rows = None
            if self.lm is not None:
                lm_rows = np.stack([self.lm.logprobs(h.lm_context) for h in active])  # (A, V)
                scores += self.lm_weight * lm_rows
            scores[:, BLANK] = -np.inf
            if len(done) >= self.beam:  # a candidate below the beam-th finished hypothesis cannot rise
                floor = sorted((self._score(h) for h in done.values()), reverse=True)[self.beam - 1]
                scores[scores <= floor] = -np.inf
            flat = scores.ravel()
            k = min(self.beam, int(np.isfinite(flat).sum()))
            if k == 0:
                break
            picks = np.argpartition(-flat, k - 1)[:k]
            rows, toks = np.divmod(picks, scores.shape[1])
            out, state = self.backend.predict(toks.astype(np.int64),
                                              stack_states([active[r].pred_state for r in rows]))
            expanded = []
            for j, (r, tok, row_state) in enumerate(zip(rows.tolist(), toks.tolist(), unstack_states(state))):
                h = active[r]
                node = _Node(tok, index, h.node, h.length + 1, hash((h.key, tok)))
                lm_lp = float(lm_rows[r, tok]) if lm_rows is not None else 0.0
                ctx = self.lm.advance(h.lm_context, tok) if self.lm is not None else ()
                expanded.append(BeamHypothesis(node, h.am + logp[r, tok], h.lm + lm_lp, ctx, out[j : j + 1],
                                               row_state))
            active = expanded
        return sorted(done.values(), key=self._score, reverse=True)[: self.beam]


def _ancestor(node: _Node | None, length: int) -> _Node | None:
    while node is not None and node.length > length:
        node = node.parent
    return node


def _walk(node: _Node | None, lo: int) -> tuple[list[int], list[int]]:
    """(token ids, frames) of the tokens after the first ``lo``, up to ``node``."""
    toks, frames = [], []
    while node is not None and node.length > lo:
        toks.append(node.token)
        frames.append(node.frame)
        node = node.parent
    return toks[::-1], frames[::-1]


def _merge(done: dict[int, BeamHypothesis], h: BeamHypothesis) -> None:
    old = done.get(h.key)
    if old is None:
        done[h.key] = h
    else:
        old.am = float(np.logaddexp(old.am, h.am))


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))
