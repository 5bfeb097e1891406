"""Unidirectional LSTM encoder with frame stacking.

Legend: B batch, T_in feature frames, F mel bins, S stack factor, T = T_in // S encoder frames,
L layers, H hidden width, D output width.

Per step: normalize features (global mean/std buffers set from training data), stack S frames,
project to H, then L blocks of ``x + dropout(LSTM(LayerNorm(x)))``, a final LayerNorm and a projection
to D. Everything is causal, so running chunk by chunk with the carried state equals one full pass.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnt.config import ModelConfig
from rnnt.state import LstmState


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("feat_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("feat_std", torch.ones(cfg.n_mels))
        self.input_proj = nn.Linear(cfg.n_mels * cfg.stack, cfg.enc_hidden)
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.enc_hidden) for _ in range(cfg.enc_layers))
        self.lstms = nn.ModuleList(nn.LSTM(cfg.enc_hidden, cfg.enc_hidden, batch_first=True)
                                   for _ in range(cfg.enc_layers))
        self.out_norm = nn.LayerNorm(cfg.enc_hidden)
        self.output_proj = nn.Linear(cfg.enc_hidden, cfg.enc_out)
        self.dropout = nn.Dropout(cfg.dropout)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> LstmState:
        """Zero state: h, c of shape (L, B, H)."""
        z = torch.zeros(self.cfg.enc_layers, batch_size, self.cfg.enc_hidden, device=device)
        return LstmState(z, z.clone())

    def stack_frames(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T_in, F) -> (B, T_in // S, F * S); trailing frames that do not fill a step are dropped."""
        s = self.cfg.stack
        b, t_in, f = feats.shape
        t = t_in // s
        x = feats[:, : t * s].reshape(b, t, s * f)  # S consecutive frames side by side
        return x, torch.div(lengths, s, rounding_mode="floor")

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, state: LstmState | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, LstmState]:
        """Encode a batch (or one chunk of a stream).

        Args:
            feats: (B, T_in, F) log-mel frames. For streaming, T_in must be a multiple of S.
            lengths: (B,) valid feature frames per row.
            state: carried state, h and c (L, B, H); zeros when None.
        Returns:
            out (B, T, D), out_lengths (B,), new state (L, B, H) each.
        """
        assert feats.dim() == 3 and feats.shape[-1] == self.cfg.n_mels, f"feats must be (B, T_in, {self.cfg.n_mels})"
        if state is None:
            state = self.init_state(feats.shape[0], feats.device)
        x = (feats - self.feat_mean) / self.feat_std
        x, out_lengths = self.stack_frames(x, lengths)
        x = self.input_proj(x)  # (B, T, H)
        hs, cs = [], []
        for i, (norm, lstm) in enumerate(zip(self.norms, self.lstms)):
            y, (h, c) = lstm(norm(x), (state.h[i : i + 1].contiguous(), state.c[i : i + 1].contiguous()))
            x = x + self.dropout(y)
            hs.append(h)
            cs.append(c)
        out = self.output_proj(self.out_norm(x))  # (B, T, D)
        return out, out_lengths, LstmState(torch.cat(hs, 0), torch.cat(cs, 0))
