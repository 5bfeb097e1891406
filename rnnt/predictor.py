"""LSTM predictor (the label model): embedding, LSTM, projection.

Legend: B batch, U tokens, E embedding width, L layers, H hidden width, D output width.
The blank id (0) doubles as the start-of-sequence token.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnt.config import ModelConfig
from rnnt.state import LstmState


class Predictor(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.pred_embed)
        self.lstm = nn.LSTM(cfg.pred_embed, cfg.pred_hidden, num_layers=cfg.pred_layers, batch_first=True,
                            dropout=cfg.dropout if cfg.pred_layers > 1 else 0.0)
        self.norm = nn.LayerNorm(cfg.pred_hidden)
        self.output_proj = nn.Linear(cfg.pred_hidden, cfg.pred_out)
        self.dropout = nn.Dropout(cfg.dropout)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> LstmState:
        """Zero state: h, c of shape (L, B, H)."""
        z = torch.zeros(self.cfg.pred_layers, batch_size, self.cfg.pred_hidden, device=device)
        return LstmState(z, z.clone())

    def forward(self, tokens: torch.Tensor, state: LstmState | None = None) -> tuple[torch.Tensor, LstmState]:
        """Args: tokens (B, U) int64; state h, c (L, B, H). Returns out (B, U, D) and the new state."""
        assert tokens.dim() == 2, "tokens must be (B, U)"
        if state is None:
            state = self.init_state(tokens.shape[0], tokens.device)
        x = self.dropout(self.embed(tokens))  # (B, U, E)
        y, (h, c) = self.lstm(x, (state.h.contiguous(), state.c.contiguous()))
        out = self.output_proj(self.norm(self.dropout(y)))  # (B, U, D)
        return out, LstmState(h, c)
