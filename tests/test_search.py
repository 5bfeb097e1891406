"""Beam search against brute force: with a beam wider than the lattice, it must find the token sequence
of highest probability (alignments summed, language model fused) and score it exactly."""

import itertools

import numpy as np
import pytest

from rnnt.lm import NgramLM
from rnnt.search import BLANK, BeamSearch, GreedySearch
from rnnt.state import LstmState

V, J = 4, 6


class TableBackend:
    """A small numpy transducer: the predictor output depends on the last two tokens (kept in the state),
    the joiner is tanh(enc + pred) times a random matrix."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.embed = rng.normal(size=(V, V, J)).astype(np.float32)
        self.out = rng.normal(scale=1.5, size=(J, V)).astype(np.float32)

    def init_predictor_state(self, batch_size: int = 1) -> LstmState:
        z = np.zeros((1, batch_size, 1), np.float32)
        return LstmState(z, z.copy())

    def predict(self, tokens, state):
        prev = state.h[0, :, 0].astype(np.int64)
        out = self.embed[prev, tokens]
        new = tokens.astype(np.float32)[None, :, None]
        return out, LstmState(new, new.copy())

    def join(self, enc, pred):
        return np.tanh(enc + pred) @ self.out


def _log_softmax(x):
    x = x.astype(np.float64)
    return x - np.log(np.exp(x - x.max()).sum()) - x.max()


def brute_force(be: TableBackend, enc: np.ndarray, max_symbols: int) -> dict[tuple[int, ...], float]:
    """log P(tokens) for every token sequence: each frame emits 0..max_symbols tokens then blank, except
    that after max_symbols tokens the frame ends without blank (the search's rule)."""
    out: dict[tuple[int, ...], float] = {}

    def walk(t, seq, prev2, score):
        if t == enc.shape[0]:
            out[seq] = np.logaddexp(out.get(seq, -np.inf), score)
            return
        frame_walk(t, seq, prev2, score, 0)

    def frame_walk(t, seq, prev2, score, n):
        if n == max_symbols:
            walk(t + 1, seq, prev2, score)
            return
        pred = be.embed[prev2[0], prev2[1]]
        lp = _log_softmax(be.join(enc[t][None], pred[None])[0])
        walk(t + 1, seq, prev2, score + lp[BLANK])
        for v in range(1, V):
            frame_walk(t, seq + (v,), (prev2[1], v), score + lp[v], n + 1)

    walk(0, (), (0, 0), 0.0)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_symbols", [1, 2])
def test_wide_beam_finds_the_most_probable_sequence(seed, max_symbols):
    be = TableBackend(seed)
    enc = np.random.default_rng(100 + seed).normal(size=(4, J)).astype(np.float32)
    exact = brute_force(be, enc, max_symbols)
    assert abs(np.logaddexp.reduce(list(exact.values()))) < 1e-6  # the lattice is a distribution
    search = BeamSearch(be, beam=10_000, max_symbols_per_frame=max_symbols)
    search.advance(enc[:1], 0)
    search.advance(enc[1:], 1)  # chunked in two
    best = max(exact, key=exact.get)
    assert tuple(search.tokens()[0]) == best
    assert search.best.am == pytest.approx(exact[best], abs=1e-6)
    assert len(search.hyps) == len(exact)  # nothing pruned, every sequence merged once
    greedy = GreedySearch(be, max_symbols)
    greedy.advance(enc, 0)
    assert exact[tuple(greedy.tokens()[0])] <= exact[best] + 1e-9


@pytest.mark.parametrize("seed", [0, 3])
def test_wide_beam_with_language_model_maximizes_the_fused_score(seed):
    be = TableBackend(seed)
    enc = np.random.default_rng(200 + seed).normal(size=(4, J)).astype(np.float32)
    rng = np.random.default_rng(seed)
    lm = NgramLM.build([list(rng.integers(1, V, size=rng.integers(1, 6))) + [1, 2, 3] for _ in range(200)],
                       order=3, vocab_size=V, min_count=1)
    weight, bonus = 1.5, 0.3
    exact = brute_force(be, enc, 2)
    fused = {s: a + weight * lm.score(list(s)) + bonus * len(s) for s, a in exact.items()}
    search = BeamSearch(be, beam=10_000, max_symbols_per_frame=2, lm=lm, lm_weight=weight, length_bonus=bonus)
    search.advance(enc, 0)
    best = max(fused, key=fused.get)
    assert tuple(search.tokens()[0]) == best
    assert search.best.lm == pytest.approx(lm.score(list(best)), abs=1e-4)
    assert best != max(exact, key=exact.get)  # the language model changed the answer


def test_narrow_beam_keeps_beam_hypotheses_and_a_stable_prefix():
    be = TableBackend(5)
    enc = np.random.default_rng(5).normal(size=(40, J)).astype(np.float32)
    search = BeamSearch(be, beam=3, max_symbols_per_frame=2)
    stable = []
    for t in range(40):
        search.advance(enc[t : t + 1], t)
        assert len(search.hyps) <= 3
        n = search.stable_length()
        prefixes = {tuple(h.tokens()[0][:n]) for h in search.hyps}
        assert len(prefixes) == 1  # all hypotheses share the stable tokens
        assert list(prefixes.pop()[: len(stable)]) == stable  # and they never change
        stable = list(search.tokens()[0][:n])
    assert search.span(0, search.length()) == search.tokens()
