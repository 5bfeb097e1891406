"""Single-process training: the tiny model learns the tiny corpus, resume, bad data, schedule, SpecAugment."""

from __future__ import annotations

import json
import math
import os
import re

import pytest
import torch

from rnnt import checkpoint
from rnnt.config import AllConfigs, AugmentConfig, ModelConfig, TrainConfig
from rnnt.errors import DataError
from rnnt.train import cpu_bf16_is_native, lr_at, spec_augment, train, train_step
from tests.conftest import TINY_STEPS, train_tiny


def test_tiny_model_reaches_low_cer_on_its_corpus(tiny_model, tiny_corpus):
    from rnnt.config import DecodingConfig
    from rnnt.evaluation import evaluate_manifest
    from rnnt.inference import load_recognizer

    greedy = DecodingConfig(beam=1, lm="")  # the search training's dev evaluation uses
    result = evaluate_manifest(load_recognizer(tiny_model, "torch", threads=2, decoding=greedy), tiny_corpus)
    assert len(result.utterances) == 20 and not result.failed
    assert result.cer < 0.20, [(u["ref"], u["hyp"]) for u in result.utterances]


def test_resume_continues_the_step_count(tiny_corpus, tmp_path):
    exp = str(tmp_path / "exp")
    quick = ["--checkpoint_every=2", "--log_every=1", "--dev_manifest=", "--threads=1"]
    first = train_tiny(tiny_corpus, exp, 4, quick)
    assert first.returncode == 0, first.stderr[-3000:]
    assert checkpoint.newest(exp).endswith("ckpt-00000004.pt")

    second = train_tiny(tiny_corpus, exp, 6, [*quick, "--resume"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert re.search(r"resumed from .*ckpt-00000004\.pt at step 4 \(epoch 1, batch 1\)", second.stderr)
    assert "step 5 epoch 1" in second.stderr and "step 4 epoch" not in second.stderr
    assert "trained to step 6" in second.stdout
    ck = checkpoint.load(checkpoint.newest(exp))
    assert ck.step == 6 and ck.extra["world_size"] == 1
    assert ck.optimizer["state"]  # Adam moments travel with the checkpoint


def test_init_from_a_model_without_ctc_head_trains_one_with_it(tiny_corpus, tmp_path):
    first = str(tmp_path / "first")
    quick = ["--checkpoint_every=2", "--log_every=1", "--dev_manifest=", "--threads=1"]
    assert train_tiny(tiny_corpus, first, 2, quick).returncode == 0
    second = str(tmp_path / "second")
    proc = train_tiny(tiny_corpus, second, 2, [*quick, "--ctc_weight=0.3", f"--init={checkpoint.newest(first)}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "initialised weights from" in proc.stderr and "/token)" in proc.stderr
    ck = checkpoint.load(checkpoint.newest(second))
    assert ck.model_config.ctc_weight == 0.3 and "ctc_head.weight" in ck.state_dict


def test_pruned_loss_learns_the_tiny_corpus(tiny_corpus, tmp_path):
    """Training with --prune_range from scratch: warm-up on the exact loss with the pruning windows'
    coverage logged, then the pruned loss; the model still fits its corpus."""
    from rnnt.evaluation import evaluate_manifest
    from rnnt.inference import load_recognizer

    exp = str(tmp_path / "pruned")
    proc = train_tiny(tiny_corpus, exp, TINY_STEPS, ["--prune_range=3", "--prune_warmup_steps=100",
                                                     "--log_every=10", "--dev_manifest="])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pruning_heads" in proc.stderr
    held = [float(x) for x in re.findall(r"step (?:[1-9]|[1-9]\d) epoch .* windows_hold ([\d.]+)%", proc.stderr)]
    assert len(held) == 9 and all(0 <= h <= 100 for h in held), proc.stderr[-2000:]
    assert not re.search(r"step (1[1-9]\d|[2-9]\d\d) epoch .* windows_hold", proc.stderr)  # gone after warm-up
    ck = checkpoint.load(checkpoint.newest(exp))
    assert ck.model_config.prune_range == 3 and "simple_am.weight" in ck.state_dict
    result = evaluate_manifest(load_recognizer(checkpoint.newest(exp), "torch", threads=2), tiny_corpus)
    assert result.cer < 0.30, [(u["ref"], u["hyp"]) for u in result.utterances]


def test_resume_with_other_model_flags_is_a_one_line_error(tiny_corpus, tmp_path):
    exp = str(tmp_path / "exp")
    quick = ["--checkpoint_every=2", "--log_every=1", "--dev_manifest=", "--threads=1"]
    assert train_tiny(tiny_corpus, exp, 2, quick).returncode == 0
    proc = train_tiny(tiny_corpus, exp, 4, [*quick, "--resume", "--prune_range=4"])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "does not fit this model's flags" in proc.stderr and "--init=" in proc.stderr


def test_bad_manifest_line_and_unreadable_audio_are_skipped(tiny_corpus, tmp_path):
    base = os.path.dirname(tiny_corpus)
    with open(tiny_corpus) as f:
        rows = [json.loads(line) for line in f]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00garbage" * 40)
    manifest = tmp_path / "train.jsonl"
    with open(manifest, "w") as f:
        for r in rows:
            f.write(json.dumps({**r, "audio": os.path.join(base, r["audio"])}) + "\n")
        f.write("this line is not json\n")
        f.write(json.dumps({"text": "a line without audio"}) + "\n")
        f.write(json.dumps({"audio": str(broken), "text": "stop the music", "duration": 1.5}) + "\n")

    proc = train_tiny(str(manifest), str(tmp_path / "exp"), 3, ["--dev_manifest=", "--threads=1"])

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "21 utterances" in proc.stderr and "(2 bad manifest lines skipped)" in proc.stderr
    m = re.search(r"skipped (\d+) unreadable audio file\(s\) in total", proc.stderr)
    assert m and int(m.group(1)) >= 1
    assert "trained to step 3" in proc.stdout


def test_epoch_too_small_for_accumulation_is_an_error(tiny_corpus, tmp_path):
    cfgs = AllConfigs(
        model=ModelConfig(vocab_size=40, enc_layers=1, enc_hidden=32, enc_out=32, pred_embed=16, pred_hidden=32,
                          pred_out=32, joint_dim=32, dropout=0.0),
        train=TrainConfig(train_manifest=tiny_corpus, exp_dir=str(tmp_path), batch_size=8, accum_steps=4,
                          max_steps=5, augment=False, num_workers=0, threads=1, device="cpu"))
    with pytest.raises(DataError, match="made no optimizer step"):  # 20 utterances = 3 batches < accum_steps
        train(cfgs)


def _batch() -> dict:
    """Two utterances of 8-bin features with 3 and 2 target tokens, as the data loader batches them."""
    return {"feats": torch.randn(2, 40, 8), "feat_lengths": torch.tensor([40, 32]),
            "tokens": torch.tensor([[3, 4, 5], [6, 7, 0]]), "token_lengths": torch.tensor([3, 2]), "skipped": 0}


_BF16_MODEL = ModelConfig(vocab_size=10, n_mels=8, enc_layers=2, enc_hidden=32, enc_out=32, pred_embed=8,
                          pred_hidden=32, pred_out=32, joint_dim=32, dropout=0.0)


def test_train_step_runs_a_stand_in_for_an_unreadable_micro_batch():
    torch.manual_seed(0)
    cfgs = AllConfigs(model=ModelConfig(vocab_size=10, n_mels=8, enc_layers=1, enc_hidden=16, enc_out=16,
                                        pred_embed=8, pred_hidden=16, pred_out=16, joint_dim=16, dropout=0.0),
                      train=TrainConfig(augment=False, warmup_steps=1))
    from rnnt.transducer import build_model

    model = build_model(cfgs.model)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    real = _batch()
    loss, norm = train_step(model, opt, [real, {"feats": None, "skipped": 2}], cfgs, 0, torch.device("cpu"),
                            torch.Generator().manual_seed(0))
    assert loss > 0 and norm > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.skipif(not cpu_bf16_is_native(), reason="this CPU has no AMX or AVX-512 BF16")
def test_bf16_on_the_cpu_autocasts_and_learns_with_fp32_weights():
    from rnnt.train import autocast_dtype
    from rnnt.transducer import build_model

    torch.manual_seed(0)
    model_cfg = _BF16_MODEL
    cfgs = {p: AllConfigs(model=model_cfg, train=TrainConfig(augment=False, warmup_steps=1, lr=3e-3, precision=p))
            for p in ("fp32", "bf16", "fp16")}
    cpu = torch.device("cpu")
    assert autocast_dtype(cfgs["bf16"].train, cpu) == torch.bfloat16
    assert autocast_dtype(cfgs["fp16"].train, cpu) is None  # fp16 stays a CUDA-only choice
    batch = _batch()
    first = {}
    models = {}
    for p in ("fp32", "bf16"):
        torch.manual_seed(1)
        models[p] = build_model(model_cfg)
        opt = torch.optim.Adam(models[p].parameters())
        first[p], _ = train_step(models[p], opt, [batch], cfgs[p], 1, cpu, torch.Generator().manual_seed(0))
    assert first["bf16"] != first["fp32"] and first["bf16"] == pytest.approx(first["fp32"], rel=0.03)
    model, opt = models["bf16"], torch.optim.Adam(models["bf16"].parameters())
    losses = [train_step(model, opt, [batch], cfgs["bf16"], s, cpu, torch.Generator().manual_seed(0))[0]
              for s in range(2, 60)]
    assert losses[-1] < 0.5 * first["bf16"], losses
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.skipif(cpu_bf16_is_native(), reason="this CPU computes bf16 in hardware")
def test_bf16_without_cpu_support_trains_in_fp32(tmp_path, tiny_corpus):
    """An AVX2-only CPU has no oneDNN bf16 LSTM: --precision=bf16 must train (in fp32, saying so), not crash."""
    from rnnt.train import autocast_dtype
    from rnnt.transducer import build_model

    model_cfg = _BF16_MODEL
    cfgs = {p: AllConfigs(model=model_cfg, train=TrainConfig(augment=False, warmup_steps=1, precision=p))
            for p in ("fp32", "bf16")}
    assert autocast_dtype(cfgs["bf16"].train, torch.device("cpu")) is None
    batch = _batch()
    losses = {}
    for p in ("fp32", "bf16"):
        torch.manual_seed(1)
        model = build_model(model_cfg)
        opt = torch.optim.Adam(model.parameters())
        losses[p] = [train_step(model, opt, [batch], cfgs[p], s, torch.device("cpu"),
                                torch.Generator().manual_seed(0))[0] for s in (1, 2)]
    assert losses["bf16"] == losses["fp32"]
    exp = str(tmp_path / "exp")
    proc = train_tiny(tiny_corpus, exp, 2, ["--precision=bf16", "--dev_manifest=", "--threads=1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(exp, "train.log")) as f:
        assert "no AMX or AVX-512 BF16" in f.read()
    assert checkpoint.newest(exp).endswith("ckpt-00000002.pt")


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    tc = TrainConfig(lr=1e-3, warmup_steps=10, decay_steps=100, min_lr=1e-5)
    warm = [lr_at(s, tc) for s in range(10)]
    assert all(a < b for a, b in zip(warm, warm[1:])) and warm[0] > 0
    assert lr_at(9, tc) == pytest.approx(1e-3) and lr_at(10, tc) == pytest.approx(1e-3)
    decay = [lr_at(s, tc) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert lr_at(110, tc) == pytest.approx(1e-5) and lr_at(10**6, tc) == pytest.approx(1e-5)
    assert min(warm + decay) >= 1e-5 - 1e-12


def test_spec_augment_masks_without_touching_its_input():
    feats = torch.randn(3, 200, 80)
    original = feats.clone()
    lengths = torch.tensor([200, 150, 90])
    cfg = AugmentConfig()
    out = spec_augment(feats, lengths, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(feats, original)
    assert out.shape == feats.shape and not torch.equal(out, feats)
    assert torch.equal(out, spec_augment(feats, lengths, cfg, torch.Generator().manual_seed(0)))  # seeded
    plain = spec_augment(feats, lengths, AugmentConfig(vtlp=0, spec_freq_masks=0, spec_time_masks=0),
                         torch.Generator().manual_seed(0))
    assert torch.equal(plain, feats)


def test_spec_eq_adds_one_bounded_smooth_curve_per_utterance():
    feats = torch.randn(4, 120, 80)
    lengths = torch.tensor([120, 100, 80, 60])
    cfg = AugmentConfig(vtlp=0, spec_freq_masks=0, spec_time_masks=0, spec_eq_db=10.0)
    out = spec_augment(feats, lengths, cfg, torch.Generator().manual_seed(3))
    diff = out - feats  # (B, T, F)
    curve = diff[:, :1, :]
    assert torch.allclose(diff, curve.expand_as(diff), atol=1e-5)  # the same gain in every frame
    peak_db = curve.abs().amax(dim=(1, 2)) / (math.log(10) / 10)
    assert bool((peak_db <= 10.0 + 1e-3).all()) and float(peak_db.max()) > 1.0
    assert len({round(float(p), 3) for p in peak_db}) == 4  # each utterance draws its own curve
    steps = (curve[:, 0, 1:] - curve[:, 0, :-1]).abs().amax()
    assert float(steps) < float(curve.abs().amax()) / 4  # smooth: no jumps between neighbouring bins
    assert torch.equal(spec_augment(feats, lengths, AugmentConfig(vtlp=0, spec_freq_masks=0, spec_time_masks=0),
                                    torch.Generator().manual_seed(3)), feats)


def test_formant_warp_moves_the_envelope_and_keeps_the_harmonics():
    from rnnt.train import formant_warp, warp_mel

    f = 80
    n = torch.arange(f, dtype=torch.float32)
    envelope = 2 * torch.cos(math.pi * 3 * (n + 0.5) / f) + torch.cos(math.pi * 7 * (n + 0.5) / f)  # formants
    ripple = 0.5 * torch.cos(math.pi * 30 * (n + 0.5) / f)  # pitch harmonics
    x = (envelope + ripple).expand(2, 5, f).contiguous()  # (B, T, F)
    alpha = torch.tensor([1.15, 0.9])
    out = formant_warp(x, alpha)
    moved = warp_mel(envelope.expand(2, 5, f).contiguous(), alpha) + ripple
    assert torch.allclose(out, moved, atol=1e-4)  # envelope stretched, ripple where it was
    assert not torch.allclose(out, warp_mel(x, alpha), atol=0.1)  # unlike VTLP, which moves both
    assert torch.allclose(formant_warp(x, torch.ones(2)), x, atol=1e-4)
    cfg = AugmentConfig(vtlp=0, spec_freq_masks=0, spec_time_masks=0, formant_warp=0.2)
    feats = torch.randn(3, 50, f)
    a = spec_augment(feats, torch.tensor([50, 40, 30]), cfg, torch.Generator().manual_seed(1))
    assert not torch.equal(a, feats) and torch.equal(a, spec_augment(feats, torch.tensor([50, 40, 30]), cfg,
                                                                     torch.Generator().manual_seed(1)))


def test_tempo_warp_retimes_within_each_utterance_and_keeps_its_length():
    from rnnt.train import tempo_warp

    t, f = 200, 3
    ramp = torch.arange(t, dtype=torch.float32)[None, :, None].expand(2, t, f).contiguous()  # frame t holds t
    ramp[1, 120:] = -7.0  # padding past the second utterance's length
    lengths = torch.tensor([200, 120])
    out = tempo_warp(ramp, lengths, 0.3, 40, torch.Generator().manual_seed(5))
    assert out.shape == ramp.shape and float(ramp[0, 199, 0]) == 199.0  # its input untouched
    for i, n in enumerate(lengths.tolist()):
        src = out[i, :n, 0]  # with a ramp, each output frame shows where it was read from
        assert float(src[0]) == 0.0 and float(src[-1]) == pytest.approx(n - 1, abs=1e-3)  # length kept
        step = src[1:] - src[:-1]
        assert bool((step > 0).all())  # in order: nothing reversed or dropped
        per_stretch = [float(step[k:k + 39].mean()) for k in range(0, n - 1, 40)]
        assert max(per_stretch) / min(per_stretch) > 1.1  # faster in one stretch than in another
        assert max(per_stretch) / min(per_stretch) <= 1.3 ** 2 + 1e-3  # within the drawn range
        assert torch.allclose(out[i, :n, 1], src)  # every bin of a frame moves together
    assert torch.equal(out[1, 120:], ramp[1, 120:])  # padding left alone
    cfg = AugmentConfig(vtlp=0, spec_freq_masks=0, spec_time_masks=0, tempo_warp=0.3)
    a = spec_augment(ramp, lengths, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(a, out)  # spec_augment draws it first, from the same generator
    with pytest.raises(Exception, match="tempo_warp must be in"):
        AugmentConfig(tempo_warp=-0.1)


def test_init_from_a_model_of_another_shape_is_a_one_line_error(tiny_corpus, random_model, tmp_path):
    proc = train_tiny(tiny_corpus, str(tmp_path / "exp"), 2, ["--dev_manifest=", "--threads=1", f"--init={random_model}"])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "does not fit this model's shape; use the same model flags" in proc.stderr
