"""Growing the encoder: identity blocks keep the model's output, then learn."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rnnt import checkpoint
from rnnt.errors import ConfigError
from rnnt.grow import grow_encoder
from tests.conftest import REPO


def _loaded(ck: checkpoint.Checkpoint):
    from rnnt.transducer import build_model

    model = build_model(ck.model_config)
    model.load_state_dict({k: v.float() for k, v in ck.state_dict.items()})
    return model.eval()


@pytest.mark.parametrize("position", [None, 0, 1])
def test_grown_encoder_gives_the_same_output_whole_and_streamed(random_model, position):
    ck = checkpoint.load(random_model)
    grown = grow_encoder(ck, 2, position)
    assert grown.model_config.enc_layers == ck.model_config.enc_layers + 2
    old, new = _loaded(ck), _loaded(grown)
    torch.manual_seed(0)
    feats, lengths = torch.randn(2, 64, ck.model_config.n_mels), torch.tensor([64, 48])
    with torch.no_grad():
        want, _, _ = old.encoder(feats, lengths)
        got, _, _ = new.encoder(feats, lengths)
        state, pieces = None, []
        for start in range(0, 64, 16):  # streamed in chunks with the carried (now 4-layer) state
            out, _, state = new.encoder(feats[:, start : start + 16], torch.tensor([16, 16]), state)
            pieces.append(out)
    assert torch.equal(got, want)
    assert state.h.shape[0] == grown.model_config.enc_layers
    torch.testing.assert_close(torch.cat(pieces, 1), want)


def test_new_blocks_get_gradients_and_move_off_the_identity(random_model):
    ck = checkpoint.load(random_model)
    model = _loaded(grow_encoder(ck, 1)).train()
    new = model.encoder.lstms[-1]
    feats = torch.randn(2, 64, ck.model_config.n_mels)
    out, _, _ = model.encoder(feats, torch.tensor([64, 64]))
    out.pow(2).mean().backward()
    h = new.hidden_size
    assert new.weight_ih_l0.grad[2 * h : 3 * h].abs().sum() > 0  # the g rows, zero at the start, learn first
    opt = torch.optim.SGD(new.parameters(), lr=0.1)
    opt.step()
    with torch.no_grad():
        y, _ = new(torch.randn(1, 8, h))
    assert y.abs().max() > 0


def test_bad_growth_is_a_config_error(random_model):
    ck = checkpoint.load(random_model)
    with pytest.raises(ConfigError):
        grow_encoder(ck, 0)
    with pytest.raises(ConfigError):
        grow_encoder(ck, 1, position=ck.model_config.enc_layers + 1)


def test_grow_model_cli_writes_a_model_that_transcribes_like_the_old(random_model, tiny_corpus, tmp_path):
    from rnnt.evaluation import evaluate_manifest
    from rnnt.inference import load_recognizer

    out = tmp_path / "grown.pt"
    proc = subprocess.run([sys.executable, "-m", "cli.grow_model", f"--model={random_model}", "--add_layers=3",
                           f"--out={out}"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 -> 5 layers" in proc.stdout and "--enc_layers=5" in proc.stdout
    assert checkpoint.load(str(out)).extra["grown"] == {"from_layers": 2, "added": 3, "position": 2}
    hyps = [[u["hyp"] for u in evaluate_manifest(load_recognizer(m, "torch", threads=1), tiny_corpus).utterances]
            for m in (random_model, str(out))]
    assert hyps[0] == hyps[1] and any(hyps[0])

    bad = subprocess.run([sys.executable, "-m", "cli.grow_model", f"--model={random_model}", "--position=9",
                          f"--out={tmp_path / 'x.pt'}"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: position must be")


def test_grow_model_cli_without_model_grows_the_shipped_one(tmp_path):
    from cli.common import DEFAULT_MODEL

    out = tmp_path / "grown.pt"
    proc = subprocess.run([sys.executable, "-m", "cli.grow_model", "--add_layers=1", f"--out={out}"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shipped = checkpoint.load(DEFAULT_MODEL)
    grown = checkpoint.load(str(out))
    assert grown.model_config.enc_layers == shipped.model_config.enc_layers + 1
    assert grown.extra["grown"]["from_layers"] == shipped.model_config.enc_layers
