import os
import subprocess
import sys

import pytest
import torch

from rnnt import checkpoint
from rnnt.errors import CheckpointError
from tests.conftest import REPO


def test_roundtrip_half_and_prune(random_model, tmp_path):
    model, ck = checkpoint.load_model(random_model)
    half = str(tmp_path / "half.pt")
    checkpoint.save(half, ck, half=True)
    assert os.path.getsize(half) < os.path.getsize(random_model)
    m2, ck2 = checkpoint.load_model(half)
    assert ck2.model_config == ck.model_config and ck2.tokenizer.sha1 == ck.tokenizer.sha1
    for (k, a), (_, b) in zip(model.state_dict().items(), m2.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-2), k
    for step in (1, 2, 3, 4):
        checkpoint.save(checkpoint.step_path(str(tmp_path), step), ck)
    checkpoint.prune(str(tmp_path), 2)
    assert checkpoint.newest(str(tmp_path)).endswith("ckpt-00000004.pt")
    assert len([p for p in os.listdir(tmp_path) if p.startswith("ckpt-")]) == 2
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, None])
def test_bad_files_are_one_line_errors(tmp_path, content):
    path = str(tmp_path / "bad.pt")
    if content is None:
        torch.save({"hello": 1}, path)
    else:
        open(path, "wb").write(content)
    with pytest.raises(CheckpointError):
        checkpoint.load(path)
    with pytest.raises(CheckpointError):
        checkpoint.load(str(tmp_path / "missing.pt"))


def test_truncated_checkpoint_is_rejected(random_model, tmp_path):
    data = open(random_model, "rb").read()
    path = tmp_path / "trunc.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        checkpoint.load(str(path))


def test_cli_reports_bad_model_in_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio": "x.wav", "text": "x"}\n')
    proc = subprocess.run([sys.executable, "-m", "cli.evaluate", f"--manifest={manifest}", f"--model={bad}"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in proc.stderr


def test_package_model_cli_drops_optimizer_and_training_heads(random_model, tmp_path):
    import dataclasses

    from rnnt.transducer import build_model

    _, ck = checkpoint.load_model(random_model)
    # As training with CTC and the pruned loss leaves it.
    trained = build_model(dataclasses.replace(ck.model_config, ctc_weight=0.3, prune_range=4))
    src = str(tmp_path / "with_ctc.pt")
    checkpoint.save(src, dataclasses.replace(ck, model_config=trained.cfg, state_dict=trained.state_dict(),
                                             optimizer={"state": {}}))
    out = tmp_path / "shipped.pt"
    proc = subprocess.run([sys.executable, "-m", "cli.package_model", f"--model={src}", f"--out={out}"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ck = checkpoint.load(str(out))
    assert ck.optimizer is None and ck.extra["source"] == "with_ctc.pt"
    assert ck.model_config.ctc_weight == 0.0 and ck.model_config.prune_range == 0
    assert not any(k.startswith(("ctc_head.", "simple_")) for k in ck.state_dict)
    assert all(v.dtype == torch.float16 for v in ck.state_dict.values() if v.is_floating_point())
    model, _ = checkpoint.load_model(str(out))
    assert model.ctc_head is None and model.simple_am is None


def test_package_model_cli_averages_checkpoints(random_model, tmp_path):
    import dataclasses

    from rnnt.transducer import build_model

    _, ck = checkpoint.load_model(random_model)
    torch.manual_seed(1)
    other = build_model(ck.model_config)  # same shape, other weights
    b = str(tmp_path / "b.pt")
    checkpoint.save(b, dataclasses.replace(ck, state_dict=other.state_dict(), step=7))
    out = tmp_path / "avg.pt"
    proc = subprocess.run([sys.executable, "-m", "cli.package_model", f"--model={random_model}",
                           f"--average_with={b}", "--nohalf", f"--out={out}"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    avg = checkpoint.load(str(out))
    assert avg.step == ck.step and avg.extra["averaged_with"] == ["b.pt"]
    mine = other.state_dict()  # differs from the first everywhere, so only the mean matches
    for k, v in avg.state_dict.items():
        want = (ck.state_dict[k] + mine[k]) / 2 if v.is_floating_point() else ck.state_dict[k]
        assert torch.allclose(v, want, atol=1e-6), k

    small = build_model(dataclasses.replace(ck.model_config, enc_hidden=32))
    c = str(tmp_path / "c.pt")
    checkpoint.save(c, dataclasses.replace(ck, model_config=small.cfg, state_dict=small.state_dict()))
    proc = subprocess.run([sys.executable, "-m", "cli.package_model", f"--model={random_model}",
                           f"--average_with={c}", f"--out={tmp_path / 'x.pt'}"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "another shape" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.pt").exists()
