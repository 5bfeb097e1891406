"""Greedy transducer search over encoder frames, written against the ``Backend`` protocol.

Legend: B streams, T encoder frames, J joint width, V vocabulary with blank (id 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnnt.backend import Backend
from rnnt.state import LstmState

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
