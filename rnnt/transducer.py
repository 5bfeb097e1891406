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
from rnnt.loss import (pruned_rnnt_loss, pruning_bounds, rnnt_loss, rnnt_loss_and_occupancy, simple_transitions,
                       transition_loss)
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
        # Training aid only: encoder-only and predictor-only logits whose sum picks the pruning windows.
        self.simple_am = nn.Linear(cfg.enc_out, cfg.vocab_size) if cfg.prune_range > 0 else None
        self.simple_lm = nn.Linear(cfg.pred_out, cfg.vocab_size) if cfg.prune_range > 0 else None
        # Set by each pruning warm-up step: the share of the exact alignment mass inside the windows.
        self.window_coverage: float | None = None

    def forward(self, feats: torch.Tensor, feat_lengths: torch.Tensor, targets: torch.Tensor,
                target_lengths: torch.Tensor, prune_warmup: float = 1.0) -> torch.Tensor:
        """Per-utterance loss.

        Args:
            feats: (B, T_in, F) log-mel; feat_lengths: (B,) valid frames.
            targets: (B, U) token ids (no blank); target_lengths: (B,).
            prune_warmup: share of the pruning warm-up done, in [0, 1] (training with prune_range only).
        Returns:
            (B,) negative log-likelihood. In training mode with ``prune_range`` the pruned loss and the
            simple-lattice loss take its place, and ``ctc_weight`` times the CTC loss is added when set; in
            evaluation mode it is always the exact loss.
        """
        enc, enc_lengths, _ = self.encoder(feats, feat_lengths)  # (B, T, D)
        pred_in = nn.functional.pad(targets, (1, 0), value=BLANK)  # (B, U+1): blank starts every sequence
        pred, _ = self.predictor(pred_in)  # (B, U+1, D)
        enc_lengths = enc_lengths.clamp(min=1)
        if self.training and self.simple_am is not None:
            loss = self._pruned_loss(enc, enc_lengths, pred, targets, target_lengths, prune_warmup)
        else:
            logits = self.joiner(enc, pred)  # (B, T, U+1, V)
            loss = rnnt_loss(logits, targets, enc_lengths, target_lengths, blank=BLANK)
        if self.training and self.ctc_head is not None:
            log_probs = self.ctc_head(enc).float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
            ctc = nn.functional.ctc_loss(log_probs, targets, enc_lengths, target_lengths, blank=BLANK,
                                         reduction="none", zero_infinity=True)  # (B,)
            loss = loss + self.cfg.ctc_weight * ctc.to(loss.dtype)
        return loss

    def _pruned_loss(self, enc: torch.Tensor, enc_lengths: torch.Tensor, pred: torch.Tensor, targets: torch.Tensor,
                     target_lengths: torch.Tensor, warmup: float) -> torch.Tensor:
        """(B,) the simple-lattice loss plus the loss of the joint on the windows that lattice picks.

        Until the warm-up is done (``warmup < 1``) the joint is trained on the exact loss while the simple
        lattice learns to align; windows picked by untrained heads would teach the joint to emit blank.
        """
        blank_lp, label_lp = simple_transitions(self.simple_am(enc), self.simple_lm(pred), targets, blank=BLANK)
        simple, occupancy = transition_loss(blank_lp, label_lp, enc_lengths, target_lengths)
        s_range = min(self.cfg.prune_range, pred.shape[1])
        starts = pruning_bounds(occupancy, s_range, enc_lengths, target_lengths)  # (B, T)
        self.window_coverage = None
        if warmup < 1.0:
            exact, exact_occ = rnnt_loss_and_occupancy(self.joiner(enc, pred), targets, enc_lengths, target_lengths,
                                                       blank=BLANK)
            u = torch.arange(pred.shape[1], device=starts.device)
            inside = (u >= starts[..., None]) & (u < starts[..., None] + s_range)  # (B, T, U+1)
            self.window_coverage = float((exact_occ * inside).sum() / exact_occ.sum().clamp_min(1e-9))
            return exact + self.cfg.simple_loss_scale * simple.to(exact.dtype)
        logits = self.joiner.pruned(enc, pred, starts, s_range)  # (B, T, S, V)
        pruned = pruned_rnnt_loss(logits, targets, starts, enc_lengths, target_lengths, blank=BLANK)
        return pruned + self.cfg.simple_loss_scale * simple.to(pruned.dtype)


_TRAINING_ONLY = ("ctc_head.", "simple_am.", "simple_lm.")


def is_training_only(key: str) -> bool:
    """True for state-dict keys that decoding never uses (the auxiliary CTC head, the pruning heads)."""
    return key.startswith(_TRAINING_ONLY)


def count_parameters(model: Transducer) -> dict[str, int]:
    """Parameters per part and in total (training-only heads are counted apart, not in the total)."""
    parts = {name: sum(p.numel() for p in getattr(model, name).parameters())
             for name in ("encoder", "predictor", "joiner")}
    parts["total"] = sum(parts.values())
    if model.ctc_head is not None:
        parts["ctc_head"] = sum(p.numel() for p in model.ctc_head.parameters())
    if model.simple_am is not None:
        parts["pruning_heads"] = sum(p.numel() for m in (model.simple_am, model.simple_lm) for p in m.parameters())
    return parts


def build_model(cfg: ModelConfig) -> Transducer:
    """A freshly initialised transducer; logs the parameter count of each part."""
    model = Transducer(cfg)
    counts = count_parameters(model)
    log.info("model parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items()))
    return model
