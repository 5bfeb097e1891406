"""RNN-T loss in plain torch (torchaudio's kernel is unusable here), as one fused autograd Function.

Legend: B batch, T encoder frames, U targets, V vocabulary with blank.

Forward: log-softmax, then the forward (alpha) and backward (beta) variables in float64. Each lattice
row is solved at once with a log-cumsum-exp, so the Python loop runs T times, not T * U. Backward
returns the gradient with respect to the logits directly:
``d(-log P)/d logits[t, u, v] = softmax[t, u, v] * occupancy[t, u] - posterior[t, u, v]``.

Pruned loss (a CPU-friendly form of k2's pruned RNN-T): the full joint costs B*T*(U+1)*J*V, and on two
cores it was about 60% of a training step. ``simple_transitions`` builds a cheap lattice from
encoder-only and predictor-only logits (the joint is their sum, normalised with one matrix product);
its loss trains those two linear heads and its node occupancy picks, for every frame, the ``S``
consecutive predictor positions that hold most of the alignment mass (``pruning_bounds``). The real
joint then runs only there, and ``pruned_rnnt_loss`` scores the paths that stay inside those windows.
S = 5 cuts the joint's work about sixfold at our token rates; the full loss stays the evaluation figure.
"""

from __future__ import annotations

import torch

_NEG = -1e30  # "log 0" that stays finite in sums
# "log 0" for a label transition inside a row: rows are solved with cumulative sums of label scores, and
# -1e30 there would swamp every finite score; exp(-1e4) is already exactly 0 in float64.
_OFF = -1e4


def _row_forward(prev: torch.Tensor, label_row: torch.Tensor) -> torch.Tensor:
    """alpha[t, u] = logsumexp_k<=u (prev[k] + sum_{k<=j<u} label_row[j]). prev (B, U+1), label_row (B, U)."""
    csum = torch.nn.functional.pad(torch.cumsum(label_row, dim=1), (1, 0))  # (B, U+1), csum[u] = sum_{j<u}
    return csum + torch.logcumsumexp(prev - csum, dim=1)


def _row_backward(nxt: torch.Tensor, label_row: torch.Tensor) -> torch.Tensor:
    """beta[t, u] = logsumexp_k>=u (nxt[k] + sum_{u<=j<k} label_row[j]). nxt (B, U+1), label_row (B, U)."""
    csum = torch.nn.functional.pad(torch.cumsum(label_row, dim=1), (1, 0))  # (B, U+1)
    rev = torch.logcumsumexp((nxt + csum).flip(1), dim=1).flip(1)
    return rev - csum


def _log_like(blank_lp: torch.Tensor, label_lp: torch.Tensor, logit_lengths: torch.Tensor,
              target_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward-backward over the lattice, float64.

    Args:
        blank_lp: (B, T, U+1) log-probability of blank at each node; label_lp: (B, T, U) of the next target
            (positions past ``target_lengths`` are ignored).
    Returns:
        log_like (B,), occupancy (B, T, U+1) and the posteriors of the blank (B, T, U+1) and label (B, T, U)
        transitions. Padding nodes get zero posterior.
    """
    blank_lp, label_lp = blank_lp.double(), label_lp.double()
    b, t_max, u1 = blank_lp.shape
    u_idx = torch.arange(u1, device=blank_lp.device)
    label_lp = label_lp.masked_fill((u_idx[None, :-1] >= target_lengths[:, None])[:, None, :], _NEG)

    alpha = blank_lp.new_full((b, t_max, u1), _NEG)
    start = blank_lp.new_full((b, u1), _NEG)
    start[:, 0] = 0.0
    alpha[:, 0] = _row_forward(start, label_lp[:, 0])
    for t in range(1, t_max):
        alpha[:, t] = _row_forward(alpha[:, t - 1] + blank_lp[:, t - 1], label_lp[:, t])

    rows = torch.arange(b, device=blank_lp.device)
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

    t_idx = torch.arange(t_max, device=blank_lp.device)
    valid = (t_idx[None, :, None] < logit_lengths[:, None, None]) & \
            (u_idx[None, None, :] <= target_lengths[:, None, None])  # (B, T, U+1)
    ll = log_like[:, None, None]
    occ = torch.exp(alpha + beta - ll).masked_fill(~valid, 0.0)  # (B, T, U+1)
    # beta shifted to t+1 with the virtual end row (0 at the final node) after the last frame.
    beta_next_t = torch.full_like(beta, _NEG)
    beta_next_t[:, :-1] = beta[:, 1:]
    beta_next_t[rows, last_t] = _NEG
    beta_next_t[rows, last_t, last_u] = 0.0
    post_blank = torch.exp(alpha + blank_lp + beta_next_t - ll).masked_fill(~valid, 0.0)
    post_label = torch.exp(alpha[:, :, :-1] + label_lp + beta[:, :, 1:] - ll)
    post_label = post_label.masked_fill(~valid[:, :, 1:], 0.0)  # (B, T, U)
    return log_like, occ, post_blank, post_label


class _RnntLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank):  # type: ignore[override]
        with torch.no_grad():
            b, t_max, u1, _ = logits.shape
            log_probs = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)
            blank_lp = log_probs[..., blank]  # (B, T, U+1)
            label_lp = torch.gather(log_probs[:, :, :-1, :], 3,
                                    targets[:, None, :, None].expand(b, t_max, u1 - 1, 1)).squeeze(3)  # (B, T, U)
            log_like, occ, post_blank, post_label = _log_like(blank_lp, label_lp, logit_lengths, target_lengths)
            grad = torch.exp(log_probs) * occ.to(log_probs.dtype).unsqueeze(-1)
            grad[..., blank] -= post_blank.to(grad.dtype)
            grad[:, :, :-1].scatter_add_(3, targets[:, None, :, None].expand(b, t_max, u1 - 1, 1),
                                         -post_label.to(grad.dtype).unsqueeze(-1))
        ctx.save_for_backward(grad)
        occ = occ.to(logits.dtype)
        ctx.mark_non_differentiable(occ)
        return (-log_like).to(logits.dtype), occ

    @staticmethod
    def backward(ctx, grad_out, _grad_occ):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return (grad * grad_out[:, None, None, None]).to(grad_out.dtype), None, None, None, None


def rnnt_loss(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
              target_lengths: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """Per-utterance negative log-likelihood (``rnnt_loss_and_occupancy`` without the occupancy)."""
    return rnnt_loss_and_occupancy(logits, targets, logit_lengths, target_lengths, blank)[0]


def rnnt_loss_and_occupancy(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
                            target_lengths: torch.Tensor, blank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-utterance negative log-likelihood, and the posterior occupancy of every node.

    Args:
        logits: (B, T, U+1, V) joint outputs (before log-softmax).
        targets: (B, U) int64 token ids (padding anywhere past target_lengths).
        logit_lengths: (B,) valid encoder frames, >= 1.
        target_lengths: (B,) valid targets.
    Returns:
        (B,) -log P(targets | input), and (B, T, U+1) the probability that the alignment passes node
        (t, u) (no gradient; 0 on padding).
    """
    assert logits.dim() == 4 and targets.dim() == 2, "logits (B, T, U+1, V) and targets (B, U) expected"
    assert logits.shape[2] == targets.shape[1] + 1, "logits' third axis must be U + 1"
    assert int(logit_lengths.min()) >= 1, "every utterance needs at least one encoder frame"
    return _RnntLoss.apply(logits, targets.long(), logit_lengths.long(), target_lengths.long(), blank)


class _TransitionLoss(torch.autograd.Function):
    """-log P from per-node transition log-probabilities, and the node occupancy (without gradient)."""

    @staticmethod
    def forward(ctx, blank_lp, label_lp, logit_lengths, target_lengths):  # type: ignore[override]
        with torch.no_grad():
            log_like, occ, post_blank, post_label = _log_like(blank_lp, label_lp, logit_lengths, target_lengths)
            # A lattice with no complete path (pruned too hard) contributes neither loss nor gradient.
            ok = (log_like > _OFF / 2)[:, None, None]
            post_blank = post_blank.clamp(0.0, 1.0).masked_fill(~ok, 0.0)
            post_label = post_label.clamp(0.0, 1.0).masked_fill(~ok, 0.0)
            nll = torch.where(ok[:, 0, 0], -log_like, torch.zeros_like(log_like))
        ctx.save_for_backward(post_blank, post_label)
        occ = occ.masked_fill(~ok, 0.0).to(blank_lp.dtype)
        ctx.mark_non_differentiable(occ)
        return nll.to(blank_lp.dtype), occ

    @staticmethod
    def backward(ctx, grad_out, _grad_occ):  # type: ignore[override]
        post_blank, post_label = ctx.saved_tensors
        g = grad_out.double()[:, None, None]
        return ((-post_blank * g).to(grad_out.dtype), (-post_label * g).to(grad_out.dtype), None, None)


def transition_loss(blank_lp: torch.Tensor, label_lp: torch.Tensor, logit_lengths: torch.Tensor,
                    target_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-utterance -log P of a lattice given by its transitions.

    Args:
        blank_lp: (B, T, U+1) log-probability of blank at node (t, u); label_lp: (B, T, U) of target u
            at node (t, u). ``_NEG`` marks a blank and ``_OFF`` a label transition that does not exist.
    Returns:
        (B,) negative log-likelihood (0 where no path survives) and the (B, T, U+1) node occupancy, which
        carries no gradient.
    """
    return _TransitionLoss.apply(blank_lp, label_lp, logit_lengths.long(), target_lengths.long())


def simple_transitions(am: torch.Tensor, lm: torch.Tensor, targets: torch.Tensor,
                       blank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Transitions of the joint ``am[t] + lm[u]``, log-softmax-normalised over V.

    Args:
        am: (B, T, V) encoder-only logits; lm: (B, U+1, V) predictor-only logits; targets: (B, U).
    Returns:
        blank_lp (B, T, U+1) and label_lp (B, T, U). The normaliser of every node is one (B, T, V) x
        (B, V, U+1) product of exponentials, so no (B, T, U+1, V) tensor is ever made.
    """
    am, lm = am.float(), lm.float()
    am_max = am.detach().amax(-1, keepdim=True)  # (B, T, 1)
    lm_max = lm.detach().amax(-1, keepdim=True)  # (B, U+1, 1)
    norm = torch.matmul((am - am_max).exp(), (lm - lm_max).exp().transpose(1, 2))  # (B, T, U+1)
    norm = norm.clamp_min(1e-30).log() + am_max + lm_max.transpose(1, 2)
    blank_lp = am[..., blank : blank + 1] + lm[..., blank].unsqueeze(1) - norm  # (B, T, U+1)
    b, t_max, _ = am.shape
    u = targets.shape[1]
    am_label = am.gather(2, targets[:, None, :].expand(b, t_max, u))  # (B, T, U)
    lm_label = lm[:, :-1].gather(2, targets[:, :, None]).squeeze(2)  # (B, U)
    return blank_lp, am_label + lm_label[:, None, :] - norm[:, :, :-1]


def pruning_bounds(occupancy: torch.Tensor, s_range: int, logit_lengths: torch.Tensor,
                   target_lengths: torch.Tensor) -> torch.Tensor:
    """(B, T) first predictor position of each frame's window of ``s_range`` positions.

    Each frame takes the window with the most occupancy, then the windows are made to chain: the first
    starts at 0, the last frame's window holds the final node, and from frame to frame the start never
    falls and rises by at most ``s_range - 1`` (so consecutive windows share a node). A path exists
    whenever ``U + 1 - s_range <= (s_range - 1) * (T - 1)``.
    """
    b, t_max, u1 = occupancy.shape
    s = min(s_range, u1)
    step = s - 1
    csum = torch.nn.functional.pad(occupancy.detach().double().cumsum(-1), (1, 0))  # (B, T, U+2)
    start = (csum[..., s:] - csum[..., :-s]).argmax(-1)  # (B, T): best window [k, k + s)
    last = (target_lengths.long() + 1 - s).clamp(min=0)[:, None]  # (B, 1): the window holding node U
    t_idx = torch.arange(t_max, device=occupancy.device)[None, :]
    start = torch.where(t_idx >= logit_lengths.long()[:, None] - 1, last, torch.minimum(start, last))
    start[:, 0] = 0
    # Reach the final window: a window can rise by at most ``step`` per frame.
    frames_left = (logit_lengths.long()[:, None] - 1 - t_idx).clamp(min=0)
    start = torch.maximum(start, (last - step * frames_left).clamp(min=0))
    # Never fall, rise by at most ``step``.
    start = start.cummax(1).values
    return (start - step * t_idx).cummin(1).values + step * t_idx


def pruned_rnnt_loss(logits: torch.Tensor, targets: torch.Tensor, starts: torch.Tensor,
                     logit_lengths: torch.Tensor, target_lengths: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """Per-utterance -log of the probability of the alignments that stay inside the windows.

    Args:
        logits: (B, T, S, V) joint outputs at nodes (t, starts[t] + k), k < S.
        targets: (B, U); starts: (B, T) from ``pruning_bounds``; lengths as for ``rnnt_loss``.
    Returns:
        (B,) an upper bound of ``rnnt_loss`` (equal to it when S >= U + 1).
    """
    b, t_max, s, _ = logits.shape
    u1 = targets.shape[1] + 1
    lp = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)  # (B, T, S, V)
    nodes = starts.long()[:, :, None] + torch.arange(s, device=logits.device)  # (B, T, S)
    next_token = torch.nn.functional.pad(targets.long(), (0, 1), value=blank)  # (B, U+1): the label leaving u
    next_token = next_token.gather(1, nodes.reshape(b, -1)).reshape(b, t_max, s)
    blank_pr = lp[..., blank]  # (B, T, S)
    label_pr = lp.gather(3, next_token[..., None]).squeeze(3)  # (B, T, S)
    label_pr = label_pr.masked_fill(nodes - starts.long()[:, :, None] == s - 1, _OFF)  # leaves the window
    blank_lp = lp.new_full((b, t_max, u1), _NEG).scatter(2, nodes, blank_pr)  # (B, T, U+1)
    label_lp = lp.new_full((b, t_max, u1), _OFF).scatter(2, nodes, label_pr)[:, :, :-1]  # (B, T, U)
    return transition_loss(blank_lp, label_lp, logit_lengths, target_lengths)[0]
