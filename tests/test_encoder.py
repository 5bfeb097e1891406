import torch

from rnnt.config import ModelConfig
from rnnt.state import stack_states, unstack_states
from rnnt.transducer import build_model, count_parameters, is_training_only

CFG = ModelConfig(vocab_size=30, enc_layers=3, enc_hidden=48, enc_out=40, pred_embed=16, pred_hidden=32,
                  pred_out=24, joint_dim=36, dropout=0.0)


def test_chunked_forward_equals_full():
    torch.manual_seed(0)
    enc = build_model(CFG).encoder.eval()
    x = torch.randn(2, 64, CFG.n_mels)
    lens = torch.tensor([64, 64])
    full, full_lens, full_state = enc(x, lens)
    assert full.shape == (2, 16, CFG.enc_out) and full_lens.tolist() == [16, 16]
    state, outs = None, []
    for start in range(0, 64, 8):
        out, _, state = enc(x[:, start : start + 8], torch.tensor([8, 8]), state)
        outs.append(out)
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)
    assert torch.allclose(state.h, full_state.h, atol=1e-5)


def test_predictor_stepwise_equals_sequence():
    torch.manual_seed(0)
    pred = build_model(CFG).predictor.eval()
    tokens = torch.randint(0, 30, (3, 7))
    full, _ = pred(tokens)
    state, outs = None, []
    for u in range(7):
        out, state = pred(tokens[:, u : u + 1], state)
        outs.append(out)
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)


def test_joiner_modes_and_shapes():
    for mode in ("sum", "concat"):
        model = build_model(ModelConfig(**{**CFG.__dict__, "joint_mode": mode}))
        logits = model.joiner(torch.randn(2, 5, CFG.enc_out), torch.randn(2, 4, CFG.pred_out))
        assert logits.shape == (2, 5, 4, 30)


def test_states_stack_and_unstack():
    enc = build_model(CFG).encoder
    s = enc.init_state(3)
    parts = unstack_states(s)
    assert len(parts) == 3 and parts[0].h.shape == (3, 1, 48)
    again = stack_states(parts)
    assert again.h.shape == (3, 3, 48)


def test_parameter_count_and_loss_backward():
    model = build_model(CFG)
    counts = count_parameters(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    loss = model(torch.randn(2, 40, CFG.n_mels), torch.tensor([40, 32]), torch.randint(1, 30, (2, 4)),
                 torch.tensor([4, 2]))
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_ctc_head_adds_its_loss_only_while_training():
    torch.manual_seed(0)
    base = build_model(CFG)
    torch.manual_seed(0)
    with_ctc = build_model(ModelConfig(**{**CFG.__dict__, "ctc_weight": 0.5}))
    missing, unexpected = with_ctc.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("ctc_head.") for k in missing)
    args = (torch.randn(2, 40, CFG.n_mels), torch.tensor([40, 32]), torch.randint(1, 30, (2, 4)), torch.tensor([4, 2]))
    base.eval(), with_ctc.eval()
    assert torch.allclose(base(*args), with_ctc(*args))  # evaluation: the transducer loss alone
    with_ctc.train()
    ctc_part = with_ctc(*args) - base(*args)
    assert (ctc_part > 0).all()  # a CTC loss is a positive negative log-likelihood
    counts = count_parameters(with_ctc)
    assert counts["ctc_head"] == CFG.enc_out * 30 + 30 and counts["total"] == count_parameters(base)["total"]


def test_pruned_training_loss_and_exact_evaluation_loss():
    torch.manual_seed(0)
    base = build_model(CFG)
    pruned = build_model(ModelConfig(**{**CFG.__dict__, "prune_range": 3}))
    missing, unexpected = pruned.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and sorted({k.split(".")[0] for k in missing}) == ["simple_am", "simple_lm"]
    assert all(is_training_only(k) for k in missing)
    args = (torch.randn(3, 48, CFG.n_mels), torch.tensor([48, 40, 20]), torch.randint(1, 30, (3, 6)),
            torch.tensor([6, 5, 2]))
    base.eval(), pruned.eval()
    assert torch.allclose(base(*args), pruned(*args))  # evaluation: the exact loss, whatever prune_range says
    base.train(), pruned.train()
    torch.manual_seed(1)
    full = base(*args)
    torch.manual_seed(1)  # the same dropout masks
    warming = pruned(*args, prune_warmup=0.5)
    torch.manual_seed(1)
    warm = pruned(*args, prune_warmup=1.0)
    assert torch.isfinite(warming).all() and torch.isfinite(warm).all()
    # Both add half the (positive) simple-lattice loss to a loss that is exact while warming up, and that
    # scores only a subset of the alignments (so is at least the exact one) afterwards.
    assert torch.all(warming > full) and torch.all(warm >= full - 1e-4) and not torch.allclose(warm, warming)
    warm.sum().backward()
    for name in ("joiner.output.weight", "simple_am.weight", "simple_lm.weight", "encoder.input_proj.weight"):
        assert pruned.get_parameter(name).grad.abs().sum() > 0, name
    counts = count_parameters(pruned)
    assert counts["pruning_heads"] == (CFG.enc_out + 1 + CFG.pred_out + 1) * CFG.vocab_size
    assert counts["total"] == count_parameters(base)["total"]
