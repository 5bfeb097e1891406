"""Explicit recurrent state objects carried between chunks.

Legend: L layers, B batch (streams), H hidden width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class LstmState:
    """State of a stack of LSTM layers. ``h``: (L, B, H), ``c``: (L, B, H); torch tensors or numpy arrays."""

    h: Any
    c: Any

    @property
    def batch_size(self) -> int:
        return int(self.h.shape[1])


def _cat(xs: Sequence[Any], axis: int) -> Any:
    first = xs[0]
    if hasattr(first, "detach"):
        import torch

        return torch.cat(list(xs), dim=axis)
    import numpy as np

    return np.concatenate(list(xs), axis=axis)


def stack_states(states: Sequence[LstmState]) -> LstmState:
    """B single-stream states -> one batched state (concatenated on the batch axis)."""
    return LstmState(_cat([s.h for s in states], 1), _cat([s.c for s in states], 1))


def unstack_states(state: LstmState) -> list[LstmState]:
    """One batched state -> per-stream states with B = 1."""
    return [LstmState(state.h[:, i : i + 1], state.c[:, i : i + 1]) for i in range(state.batch_size)]


def zero_state(layers: int, batch_size: int, hidden: int) -> LstmState:
    """All-zero numpy state: h and c of shape (L, B, H), float32."""
    import numpy as np

    z = np.zeros((layers, batch_size, hidden), np.float32)
    return LstmState(z, z.copy())
