"""RNN-T loss in plain torch (torchaudio's kernel is unusable here), as one fused autograd Function.

Legend: B batch, T encoder frames, U targets, V vocabulary with blank.

Forward: log-softmax, then the forward (alpha) and backward (beta) variables in float64. Each lattice
row is solved at once with a log-cumsum-exp, so the Python loop runs T times, not T * U. Backward
returns the gradient with respect to the logits directly:
``d(-log P)/d logits[t, u, v] = softmax[t, u, v] * occupancy[t, u] - posterior[t, u, v]``.
"""

from __future__ import annotations

import torch

_NEG = -1e30  # "log 0" that stays finite in sums


def _row_forward(prev: torch.Tensor, label_row: torch.Tensor) -> torch.Tensor:
    """alpha[t, u] = logsumexp_k<=u (prev[k] + sum_{k<=j<u} label_row[j]). prev (B, U+1), label_row (B, U)."""
    csum = torch.nn.functional.pad(torch.cumsum(label_row, dim=1), (1, 0))  # (B, U+1), csum[u] = sum_{j<u}
    return csum + torch.logcumsumexp(prev - csum, dim=1)


def _row_backward(nxt: torch.Tensor, label_row: torch.Tensor) -> torch.Tensor:
    """beta[t, u] = logsumexp_k>=u (nxt[k] + sum_{u<=j<k} label_row[j]). nxt (B, U+1), label_row (B, U)."""
    csum = torch.nn.functional.pad(torch.cumsum(label_row, dim=1), (1, 0))  # (B, U+1)
    rev = torch.logcumsumexp((nxt + csum).flip(1), dim=1).flip(1)
    return rev - csum


def _lattice(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
             target_lengths: torch.Tensor, blank: int):
    b, t_max, u1, v = logits.shape
    log_probs = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)
    blank_lp = log_probs[..., blank].double()  # (B, T, U+1)
    label_lp = torch.gather(log_probs[:, :, :-1, :], 3, targets[:, None, :, None].expand(b, t_max, u1 - 1, 1))
    label_lp = label_lp.squeeze(3).double()  # (B, T, U)
    u_idx = torch.arange(u1 - 1, device=logits.device)
    label_lp = label_lp.masked_fill((u_idx[None, :] >= target_lengths[:, None])[:, None, :], _NEG)

    alpha = blank_lp.new_full((b, t_max, u1), _NEG)
    start = blank_lp.new_full((b, u1), _NEG)
    start[:, 0] = 0.0
    alpha[:, 0] = _row_forward(start, label_lp[:, 0])
    for t in range(1, t_max):
        alpha[:, t] = _row_forward(alpha[:, t - 1] + blank_lp[:, t - 1], label_lp[:, t])

    rows = torch.arange(b, device=logits.device)
    last_t, last_u = logit_lengths - 1, target_lengths
    log_like = alpha[rows, last_t, last_u] + blank_lp[rows, last_t, last_u]  # (B,)

    beta = blank_lp.new_full((b, t_max, u1), _NEG)
    terminal = blank_lp.new_full((b, u1), _NEG)
    terminal[rows, last_u] = 0.0
    nxt_beta = terminal
    for t in range(t_max - 1, -1, -1):
        is_last = (last_t == t)[:, None]
        nxt = torch.where(is_last, terminal, nxt_beta)  # beta[t+1], or the virtual end row
        beta[:, t] = _row_backward(blank_lp[:, t] + nxt, label_lp[:, t])
        nxt_beta = beta[:, t]
    return log_probs, blank_lp, label_lp, alpha, beta, log_like


class _RnntLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank):  # type: ignore[override]
        with torch.no_grad():
            log_probs, blank_lp, label_lp, alpha, beta, log_like = _lattice(
                logits, targets, logit_lengths, target_lengths, blank)
            b, t_max, u1, _ = logits.shape
            t_idx = torch.arange(t_max, device=logits.device)
            u_idx = torch.arange(u1, device=logits.device)
            valid = (t_idx[None, :, None] < logit_lengths[:, None, None]) & \
                    (u_idx[None, None, :] <= target_lengths[:, None, None])  # (B, T, U+1)
            ll = log_like[:, None, None]
            occ = torch.exp(alpha + beta - ll).masked_fill(~valid, 0.0)  # (B, T, U+1)
            # beta shifted to t+1 with the virtual end row (0 at the final node) after the last frame.
            beta_next_t = torch.full_like(beta, _NEG)
            beta_next_t[:, :-1] = beta[:, 1:]
            rows = torch.arange(b, device=logits.device)
            beta_next_t[rows, logit_lengths - 1] = _NEG
            beta_next_t[rows, logit_lengths - 1, target_lengths] = 0.0
            post_blank = torch.exp(alpha + blank_lp + beta_next_t - ll).masked_fill(~valid, 0.0)
            post_label = torch.exp(alpha[:, :, :-1] + label_lp + beta[:, :, 1:] - ll)
            post_label = post_label.masked_fill(~valid[:, :, 1:], 0.0)  # (B, T, U)
            grad = torch.exp(log_probs) * occ.to(log_probs.dtype).unsqueeze(-1)
            grad[..., blank] -= post_blank.to(grad.dtype)
            grad[:, :, :-1].scatter_add_(3, targets[:, None, :, None].expand(b, t_max, u1 - 1, 1),
                                         -post_label.to(grad.dtype).unsqueeze(-1))
        ctx.save_for_backward(grad)
        return (-log_like).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return (grad * grad_out[:, None, None, None]).to(grad_out.dtype), None, None, None, None


def rnnt_loss(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
              target_lengths: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """Per-utterance negative log-likelihood.

    Args:
        logits: (B, T, U+1, V) joint outputs (before log-softmax).
        targets: (B, U) int64 token ids (padding anywhere past target_lengths).
        logit_lengths: (B,) valid encoder frames, >= 1.
        target_lengths: (B,) valid targets.
    Returns:
        (B,) -log P(targets | input).
    """
    assert logits.dim() == 4 and targets.dim() == 2, "logits (B, T, U+1, V) and targets (B, U) expected"
    assert logits.shape[2] == targets.shape[1] + 1, "logits' third axis must be U + 1"
    assert int(logit_lengths.min()) >= 1, "every utterance needs at least one encoder frame"
    return _RnntLoss.apply(logits, targets.long(), logit_lengths.long(), target_lengths.long(), blank)
