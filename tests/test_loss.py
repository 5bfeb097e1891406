import itertools
import time

import pytest
import torch

from rnnt.loss import rnnt_loss


def brute_force_nll(logits: torch.Tensor, y: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """-log P by enumerating every alignment of a (T, U+1, V) lattice."""
    t_len, u1, _ = logits.shape
    u_len = u1 - 1
    lp = torch.log_softmax(logits.double(), -1)
    paths = []
    for label_pos in itertools.combinations(range(t_len - 1 + u_len), u_len):
        t = u = 0
        s = lp.new_zeros(())
        for k in range(t_len - 1 + u_len):
            if k in label_pos:
                s = s + lp[t, u, y[u]]
                u += 1
            else:
                s = s + lp[t, u, blank]
                t += 1
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
