"""The RNN-Transducer: encoder, predictor and joiner composed; ``build_model`` is the only builder.

Legend: B batch, T_in feature frames, F mel bins, T encoder frames, U targets, V vocabulary with blank.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from rnnt.config import ModelConfig
from rnnt.encoder import Encoder
from rnnt.joiner import Joiner
from rnnt.loss import rnnt_loss
from rnnt.predictor import Predictor

BLANK = 0
log = logging.getLogger(__name__)


class Transducer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.predictor = Predictor(cfg)
        self.joiner = Joiner(cfg)
        # Training aid only: a CTC head on the encoder gets the encoder past the all-blank plateau sooner.
        self.ctc_head = nn.Linear(cfg.enc_out, cfg.vocab_size) if cfg.ctc_weight > 0 else None

    def forward(self, feats: torch.Tensor, feat_lengths: torch.Tensor, targets: torch.Tensor,
                target_lengths: torch.Tensor) -> torch.Tensor:
        """Per-utterance loss.

        Args:
            feats: (B, T_in, F) log-mel; feat_lengths: (B,) valid frames.
            targets: (B, U) token ids (no blank); target_lengths: (B,).
        Returns:
            (B,) negative log-likelihood; in training mode plus ``ctc_weight`` times the CTC loss when set.
        """
        enc, enc_lengths, _ = self.encoder(feats, feat_lengths)  # (B, T, D)
        pred_in = nn.functional.pad(targets, (1, 0), value=BLANK)  # (B, U+1): blank starts every sequence
        pred, _ = self.predictor(pred_in)  # (B, U+1, D)
        logits = self.joiner(enc, pred)  # (B, T, U+1, V)
        enc_lengths = enc_lengths.clamp(min=1)
        loss = rnnt_loss(logits, targets, enc_lengths, target_lengths, blank=BLANK)
        if self.training and self.ctc_head is not None:
            log_probs = self.ctc_head(enc).float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
            ctc = nn.functional.ctc_loss(log_probs, targets, enc_lengths, target_lengths, blank=BLANK,
                                         reduction="none", zero_infinity=True)  # (B,)
            loss = loss + self.cfg.ctc_weight * ctc.to(loss.dtype)
        return loss


def is_training_only(key: str) -> bool:
    """True for state-dict keys that decoding never uses (the auxiliary CTC head)."""
    return key.startswith("ctc_head.")


def count_parameters(model: Transducer) -> dict[str, int]:
    """Parameters per part and in total (the training-only CTC head is counted apart, not in the total)."""
    parts = {name: sum(p.numel() for p in getattr(model, name).parameters())
             for name in ("encoder", "predictor", "joiner")}
    parts["total"] = sum(parts.values())
    if model.ctc_head is not None:
        parts["ctc_head"] = sum(p.numel() for p in model.ctc_head.parameters())
    return parts


def build_model(cfg: ModelConfig) -> Transducer:
    """A freshly initialised transducer; logs the parameter count of each part."""
    model = Transducer(cfg)
    counts = count_parameters(model)
    log.info("model parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items()))
    return model
