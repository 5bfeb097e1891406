"""Shared fixtures: a tiny espeak-ng corpus and a tiny model trained on it (once per test session)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TINY_STEPS = 300  # the tiny model then fits the 20 sentences (CER about 14%)
SENTENCES = [
    "the cat sat on the mat", "open the door please", "turn left at the light", "go forward ten meters",
    "she sells sea shells", "a quick brown fox", "my name is john", "it is raining today",
    "close the window now", "i like green apples", "where is the station", "call me tomorrow",
    "stop the music", "play some jazz", "the dog is barking", "we need more time", "read the book again",
    "the sun is hot", "pick up the phone", "wait for me here",
]


def espeak(text: str, path: str, voice: str = "en-us", speed: int = 150) -> None:
    """Synthesize ``text`` to a WAV file (22.05 kHz, espeak-ng's native rate)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", path, text], check=True)


def _write_utterance(d, name: str, text: str, f) -> None:
    import soundfile as sf

    from rnnt.audio import load_audio, write_wav

    path = str(d / name)
    espeak(text, path)
    write_wav(path, load_audio(path))  # 16 kHz, as espeak-ng writes 22.05 kHz
    info = sf.info(path)
    f.write(json.dumps({"audio": name, "text": text, "duration": info.frames / info.samplerate}) + "\n")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> str:
    """The 20 SENTENCES as espeak-ng utterances; returns the manifest path (``train.jsonl``)."""
    d = tmp_path_factory.mktemp("tiny_corpus")
    with open(d / "train.jsonl", "w") as f:
        for i, s in enumerate(SENTENCES):
            _write_utterance(d, f"u{i:02d}.wav", s, f)
    return str(d / "train.jsonl")


def train_tiny(manifest: str, exp_dir: str, steps: int, extra: list[str] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cli.train", "--flagfile", os.path.join(REPO, "flagfiles", "tiny.txt"),
           f"--train_manifest={manifest}", f"--dev_manifest={manifest}", f"--exp_dir={exp_dir}",
           f"--max_steps={steps}", "--vocab_size=40", "--threads=2", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def tiny_model(tiny_corpus, tmp_path_factory) -> str:
    """Path of a tiny checkpoint trained to fit the tiny corpus (about 40 s on 2 idle cores)."""
    exp = tmp_path_factory.mktemp("tiny_exp")
    proc = train_tiny(tiny_corpus, str(exp), TINY_STEPS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from rnnt.checkpoint import newest

    path = newest(str(exp))
    assert path is not None
    return path


@pytest.fixture(scope="session")
def random_model(tmp_path_factory, tiny_corpus) -> str:
    """An untrained checkpoint with the tiny shape (random weights, real tokenizer)."""
    import torch

    from rnnt import checkpoint
    from rnnt.config import FeatureConfig, ModelConfig
    from rnnt.tokenizer import train_bpe
    from rnnt.transducer import build_model

    d = tmp_path_factory.mktemp("random_model")
    tok = train_bpe(SENTENCES * 5, 40, str(d / "tok.model"))
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.vocab_size, enc_layers=2, enc_hidden=64, enc_out=64, pred_embed=32,
                      pred_hidden=64, pred_out=64, joint_dim=64, dropout=0.0)
    model = build_model(cfg)
    path = str(d / "random.pt")
    checkpoint.save(path, checkpoint.Checkpoint(cfg, FeatureConfig(), tok, model.state_dict(), step=0))
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
