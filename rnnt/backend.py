"""The inference ``Backend`` protocol and its torch implementation.

Legend: B streams, T_in feature frames, F mel bins, T encoder frames, J joint width, V vocabulary,
L layers, H hidden width.

A backend is stateless: states go in and come out (numpy arrays), and the caller (a ``Stream``) owns
them. ``encode`` and ``predict`` already apply the joiner's input projections, so one search step costs
only add, tanh and the output layer.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from rnnt.config import FeatureConfig, ModelConfig
from rnnt.state import LstmState, zero_state


class Backend(Protocol):
    model_config: ModelConfig
    feature_config: FeatureConfig

    def init_encoder_state(self, batch_size: int = 1) -> LstmState:
        """Zero encoder state, h and c (L, B, H) float32."""

    def init_predictor_state(self, batch_size: int = 1) -> LstmState:
        """Zero predictor state, h and c (L, B, H) float32."""

    def encode(self, feats: np.ndarray, state: LstmState) -> tuple[np.ndarray, LstmState]:
        """feats (B, T_in, F) float32, T_in a multiple of the stack factor -> (B, T, J) projected encoder out."""

    def predict(self, tokens: np.ndarray, state: LstmState) -> tuple[np.ndarray, LstmState]:
        """tokens (B,) int64 -> (B, J) projected predictor output and the new state."""

    def join(self, enc: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """enc (B, J), pred (B, J) -> logits (B, V)."""


class TorchBackend:
    """Runs a ``Transducer`` with torch on the CPU (or any device)."""

    def __init__(self, model, feature_config: FeatureConfig, threads: int = 0) -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model = model.eval()
        self.model_config: ModelConfig = model.cfg
        self.feature_config = feature_config
        self._device = next(model.parameters()).device

    def _t(self, x: np.ndarray):
        return self._torch.from_numpy(np.ascontiguousarray(x)).to(self._device)

    def _state_in(self, s: LstmState) -> LstmState:
        return LstmState(self._t(s.h), self._t(s.c))

    @staticmethod
    def _state_out(s: LstmState) -> LstmState:
        return LstmState(s.h.float().cpu().numpy(), s.c.float().cpu().numpy())

    def init_encoder_state(self, batch_size: int = 1) -> LstmState:
        return zero_state(self.model_config.enc_layers, batch_size, self.model_config.enc_hidden)

    def init_predictor_state(self, batch_size: int = 1) -> LstmState:
        return zero_state(self.model_config.pred_layers, batch_size, self.model_config.pred_hidden)

    def encode(self, feats: np.ndarray, state: LstmState) -> tuple[np.ndarray, LstmState]:
        with self._torch.inference_mode():
            x = self._t(feats.astype(np.float32, copy=False))
            lengths = self._torch.full((x.shape[0],), x.shape[1], dtype=self._torch.long)
            out, _, new_state = self.model.encoder(x, lengths, self._state_in(state))
            return self.model.joiner.project_encoder(out).float().cpu().numpy(), self._state_out(new_state)

    def predict(self, tokens: np.ndarray, state: LstmState) -> tuple[np.ndarray, LstmState]:
        with self._torch.inference_mode():
            t = self._t(tokens.astype(np.int64, copy=False))[:, None]  # (B, 1)
            out, new_state = self.model.predictor(t, self._state_in(state))
            proj = self.model.joiner.project_predictor(out[:, 0])
            return proj.float().cpu().numpy(), self._state_out(new_state)

    def join(self, enc: np.ndarray, pred: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model.joiner.join_projected(self._t(enc), self._t(pred)).float().cpu().numpy()
