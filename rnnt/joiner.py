"""Joint network: project encoder and predictor outputs, combine, tanh, output layer.

Legend: B batch, T encoder frames, U + 1 predictor positions, J joint width, V vocabulary with blank.

``mode="sum"``: ``W_out tanh(W_e e + W_p p)``. ``mode="concat"``: ``W_out tanh(W [e; p])``, which is the
same function family; we compute it as the sum of the two halves of ``W`` so both modes share the
fast streaming path where the projections are applied once per encoder frame / predictor step.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnt.config import ModelConfig


class Joiner(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.enc_proj = nn.Linear(cfg.enc_out, cfg.joint_dim)
        # In concat mode the bias lives only in enc_proj (one linear layer over [e; p]).
        self.pred_proj = nn.Linear(cfg.pred_out, cfg.joint_dim, bias=cfg.joint_mode == "sum")
        self.output = nn.Linear(cfg.joint_dim, cfg.vocab_size)

    def project_encoder(self, enc: torch.Tensor) -> torch.Tensor:
        """(..., D_enc) -> (..., J)."""
        return self.enc_proj(enc)

    def project_predictor(self, pred: torch.Tensor) -> torch.Tensor:
        """(..., D_pred) -> (..., J)."""
        return self.pred_proj(pred)

    def join_projected(self, enc_p: torch.Tensor, pred_p: torch.Tensor) -> torch.Tensor:
        """Projected inputs that broadcast to (..., J) -> logits (..., V)."""
        return self.output(torch.tanh(enc_p + pred_p))

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Full lattice: enc (B, T, D_enc), pred (B, U+1, D_pred) -> logits (B, T, U+1, V)."""
        e = self.project_encoder(enc).unsqueeze(2)  # (B, T, 1, J)
        p = self.project_predictor(pred).unsqueeze(1)  # (B, 1, U+1, J)
        return self.join_projected(e, p)

    def pruned(self, enc: torch.Tensor, pred: torch.Tensor, starts: torch.Tensor, s_range: int) -> torch.Tensor:
        """Pruned lattice: logits (B, T, S, V) at predictor positions ``starts[b, t] + k``, k < S.

        enc (B, T, D_enc), pred (B, U+1, D_pred), starts (B, T) with ``starts + S <= U + 1``.
        """
        e = self.project_encoder(enc).unsqueeze(2)  # (B, T, 1, J)
        p = self.project_predictor(pred)  # (B, U+1, J)
        b, t_max = starts.shape
        nodes = starts[:, :, None] + torch.arange(s_range, device=starts.device)  # (B, T, S)
        p = p.gather(1, nodes.reshape(b, t_max * s_range, 1).expand(-1, -1, p.shape[-1]))
        return self.join_projected(e, p.reshape(b, t_max, s_range, -1))
