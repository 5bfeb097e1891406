import itertools
import time

import pytest
import torch

from rnnt.loss import (pruned_rnnt_loss, pruning_bounds, rnnt_loss, simple_transitions,
                       transition_loss)


def brute_force_nll(logits: torch.Tensor, y: torch.Tensor, blank: int = 0, allowed=None) -> torch.Tensor:
    """-log P by enumerating every alignment of a (T, U+1, V) lattice (only those whose nodes all pass
    ``allowed(t, u)`` when it is given)."""
    t_len, u1, _ = logits.shape
    u_len = u1 - 1
    lp = torch.log_softmax(logits.double(), -1)
    paths = []
    for label_pos in itertools.combinations(range(t_len - 1 + u_len), u_len):
        t = u = 0
        s = lp.new_zeros(())
        inside = allowed is None or allowed(0, 0)
        for k in range(t_len - 1 + u_len):
            if k in label_pos:
                s = s + lp[t, u, y[u]]
                u += 1
            else:
                s = s + lp[t, u, blank]
                t += 1
            inside = inside and (allowed is None or allowed(t, u))
        if inside:
            paths.append(s + lp[t_len - 1, u_len, blank])
    return -torch.logsumexp(torch.stack(paths), 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_and_gradient_match_brute_force(seed):
    torch.manual_seed(seed)
    b, t_max, u_max, v = 4, 5, 3, 6
    logits = torch.randn(b, t_max, u_max + 1, v, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, v, (b, u_max))
    t_lens = torch.tensor([5, 3, 4, 1])
    u_lens = torch.tensor([3, 1, 0, 2])
    loss = rnnt_loss(logits, targets, t_lens, u_lens)
    ref = torch.stack([brute_force_nll(logits[i, : t_lens[i], : u_lens[i] + 1], targets[i]) for i in range(b)])
    assert torch.allclose(loss, ref, atol=1e-10)
    w = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    g, = torch.autograd.grad((loss * w).sum(), logits)
    g_ref, = torch.autograd.grad((ref * w).sum(), logits)
    assert torch.allclose(g, g_ref, atol=1e-10)
    # Padding positions get exactly zero gradient.
    assert g[1, 3:].abs().max() == 0 and g[1, :, 2:].abs().max() == 0


def test_float32_close_to_float64():
    torch.manual_seed(3)
    logits = torch.randn(2, 20, 6, 30)
    targets = torch.randint(1, 30, (2, 5))
    lens, ulens = torch.tensor([20, 17]), torch.tensor([5, 4])
    a = rnnt_loss(logits, targets, lens, ulens)
    b = rnnt_loss(logits.double(), targets, lens, ulens)
    assert torch.allclose(a.double(), b, rtol=1e-5)


def test_benchmark_prints_time(capsys):
    """Benchmark B=16, T=100, U=30, V=256 forward+backward (prints, never asserts a time)."""
    torch.manual_seed(0)
    b, t, u, v = 16, 100, 30, 256
    logits = torch.randn(b, t, u + 1, v, requires_grad=True)
    targets = torch.randint(1, v, (b, u))
    lens, ulens = torch.full((b,), t), torch.full((b,), u)
    start = time.perf_counter()
    rnnt_loss(logits, targets, lens, ulens).sum().backward()
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nrnnt_loss B={b} T={t} U={u} V={v} forward+backward: {elapsed * 1000:.0f} ms")
    assert torch.isfinite(logits.grad).all()


def _full_transitions(logits, targets):
    lp = torch.log_softmax(logits, -1)
    b, t, u1, _ = logits.shape
    label = lp[:, :, :-1].gather(3, targets[:, None, :, None].expand(b, t, u1 - 1, 1)).squeeze(3)
    return lp[..., 0], label


def test_transition_loss_matches_rnnt_loss_value_and_gradient():
    torch.manual_seed(4)
    logits = torch.randn(3, 6, 4, 7, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 7, (3, 3))
    t_lens, u_lens = torch.tensor([6, 4, 2]), torch.tensor([3, 2, 0])
    nll, occ = transition_loss(*_full_transitions(logits, targets), t_lens, u_lens)
    ref = rnnt_loss(logits, targets, t_lens, u_lens)
    assert torch.allclose(nll, ref, atol=1e-10)
    assert not occ.requires_grad
    # Every frame of an utterance is crossed by each path exactly once: occupancy sums to 1 per valid frame
    # when one counts the node where the path leaves the frame, i.e. blank posteriors; occupancy sums >= 1.
    assert torch.all(occ[0, :6].sum(-1) >= 1 - 1e-9) and occ[2, 2:].abs().max() == 0
    g, = torch.autograd.grad(nll.sum(), logits)
    g_ref, = torch.autograd.grad(ref.sum(), logits)
    assert torch.allclose(g, g_ref, atol=1e-10)


def test_simple_transitions_equal_the_summed_joint():
    torch.manual_seed(5)
    am, lm = torch.randn(2, 5, 9) * 3, torch.randn(2, 4, 9) * 3
    targets = torch.randint(1, 9, (2, 3))
    blank, label = simple_transitions(am, lm, targets)
    ref_blank, ref_label = _full_transitions(am[:, :, None, :] + lm[:, None, :, :], targets)
    assert torch.allclose(blank, ref_blank, atol=1e-5) and torch.allclose(label, ref_label, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pruning_bounds_chain_and_reach_the_end(seed):
    torch.manual_seed(seed)
    b, t_max, u_max, s = 6, 12, 9, 3
    occ = torch.rand(b, t_max, u_max + 1) ** 4
    t_lens = torch.tensor([12, 9, 5, 12, 3, 1])
    u_lens = torch.tensor([9, 7, 8, 0, 2, 1])
    starts = pruning_bounds(occ, s, t_lens, u_lens)
    assert starts.shape == (b, t_max)
    for i in range(b):
        st, t_len, u_len = starts[i, : t_lens[i]], int(t_lens[i]), int(u_lens[i])
        assert st[0] == 0
        if u_len + 1 - s > (s - 1) * (t_len - 1):
            continue  # no chain of windows can hold every path's nodes (checked in the loss test)
        assert st[-1] <= u_len <= st[-1] + s - 1, (i, st)
        steps = st[1:] - st[:-1]
        assert torch.all(steps >= 0) and torch.all(steps <= s - 1), (i, st)
        assert torch.all(st <= max(0, u_len + 1 - s))


def test_pruning_bounds_follow_the_occupancy():
    t_max, u_max = 8, 12
    occ = torch.zeros(1, t_max, u_max + 1)
    diag = [0, 2, 3, 5, 6, 8, 10, 12]
    for t, u in enumerate(diag):
        occ[0, t, u] = 1.0
    starts = pruning_bounds(occ, 3, torch.tensor([t_max]), torch.tensor([u_max]))[0]
    for t, u in enumerate(diag):
        assert starts[t] <= u < starts[t] + 3


@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_loss_scores_the_paths_inside_the_windows(seed):
    torch.manual_seed(seed)
    b, t_max, u_max, v, s = 3, 5, 4, 6, 2
    full = torch.randn(b, t_max, u_max + 1, v, dtype=torch.float64)
    targets = torch.randint(1, v, (b, u_max))
    t_lens, u_lens = torch.tensor([5, 5, 3]), torch.tensor([4, 2, 1])
    occ = torch.rand(b, t_max, u_max + 1)
    starts = pruning_bounds(occ, s, t_lens, u_lens)
    nodes = starts[:, :, None] + torch.arange(s)
    logits = full.gather(2, nodes[..., None].expand(b, t_max, s, v)).clone().requires_grad_(True)
    nll = pruned_rnnt_loss(logits, targets, starts, t_lens, u_lens)
    refs = []
    for i in range(b):
        refs.append(brute_force_nll(full[i, : t_lens[i], : u_lens[i] + 1], targets[i],
                                    allowed=lambda t, u, st=starts[i]: int(st[t]) <= u < int(st[t]) + s))
    assert torch.allclose(nll.detach(), torch.stack(refs), atol=1e-10)
    assert torch.all(nll.detach() >= rnnt_loss(full, targets, t_lens, u_lens) - 1e-10)
    # Gradient against autograd through the enumeration.
    leaf = logits.detach().clone().requires_grad_(True)
    scattered = torch.zeros_like(full).scatter(2, nodes[..., None].expand(b, t_max, s, v), leaf)
    scattered = torch.where(torch.zeros_like(full, dtype=torch.bool).scatter(
        2, nodes[..., None].expand(b, t_max, s, v), True), scattered, full)
    ref = torch.stack([brute_force_nll(scattered[i, : t_lens[i], : u_lens[i] + 1], targets[i],
                                       allowed=lambda t, u, st=starts[i]: int(st[t]) <= u < int(st[t]) + s)
                       for i in range(b)])
    g, = torch.autograd.grad(nll.sum(), logits)
    g_ref, = torch.autograd.grad(ref.sum(), leaf)
    assert torch.allclose(g, g_ref, atol=1e-10)


def test_pruned_loss_with_wide_windows_is_the_full_loss():
    torch.manual_seed(6)
    b, t_max, u_max, v = 2, 7, 3, 5
    full = torch.randn(b, t_max, u_max + 1, v)
    targets = torch.randint(1, v, (b, u_max))
    t_lens, u_lens = torch.tensor([7, 6]), torch.tensor([3, 2])
    starts = pruning_bounds(torch.rand(b, t_max, u_max + 1), 9, t_lens, u_lens)
    assert starts.abs().max() == 0
    assert torch.allclose(pruned_rnnt_loss(full, targets, starts, t_lens, u_lens),
                          rnnt_loss(full, targets, t_lens, u_lens), rtol=1e-5)


def test_impossible_windows_give_no_loss_and_no_nan():
    logits = torch.randn(1, 2, 2, 5, requires_grad=True)  # 2 frames, windows of 2, but 4 targets
    starts = torch.tensor([[0, 1]])
    nll = pruned_rnnt_loss(logits, torch.tensor([[1, 2, 3, 4]]), starts, torch.tensor([2]), torch.tensor([4]))
    nll.sum().backward()
    assert nll.item() == 0 and torch.isfinite(logits.grad).all() and logits.grad.abs().max() == 0
