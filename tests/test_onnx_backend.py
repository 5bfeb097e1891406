"""OnnxBackend: exactly the torch tokens, batched streams, int8, clear errors, and a run without torch."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rnnt.audio import load_audio
from rnnt.errors import CheckpointError
from rnnt.inference import load_recognizer
from rnnt.onnx_backend import OnnxBackend
from rnnt.state import stack_states, unstack_states

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _export(ckpt_path: str, out: str, int8: bool = False) -> str:
    from export.onnx_export import export_onnx, quantize_int8
    from rnnt.checkpoint import load_model

    model, ckpt = load_model(ckpt_path)
    export_onnx(model, ckpt.feature_config, ckpt.tokenizer, out)
    if int8:
        quantize_int8(out)
    return out


@pytest.fixture(scope="module")
def tiny_onnx(tiny_model, tmp_path_factory) -> str:
    return _export(tiny_model, str(tmp_path_factory.mktemp("tiny_onnx")), int8=True)


@pytest.fixture(scope="module")
def random_onnx(random_model, tmp_path_factory) -> str:
    return _export(random_model, str(tmp_path_factory.mktemp("random_onnx")))


def _corpus(manifest: str) -> list[tuple[np.ndarray, str]]:
    base = os.path.dirname(manifest)
    return [(load_audio(os.path.join(base, d["audio"])), d["text"]) for d in map(json.loads, open(manifest))]


def _tokens(rec, x: np.ndarray, piece: int) -> list[tuple[int, float]]:
    s = rec.create_stream()
    toks = []
    for i in range(0, len(x), piece):
        toks += s.accept(x[i : i + piece])
    toks += s.finalize()
    return [(t.id, t.time) for t in toks]


@pytest.mark.parametrize("which", ["tiny", "random"])
def test_same_tokens_as_torch(which, request, tiny_corpus):
    ckpt, folder = request.getfixturevalue(f"{which}_model"), request.getfixturevalue(f"{which}_onnx")
    from rnnt.config import DecodingConfig

    d = DecodingConfig(beam=1, lm="") if which == "random" else DecodingConfig()  # a random model emits little under beam
    torch_rec, onnx_rec = load_recognizer(ckpt, "torch", 1, decoding=d), load_recognizer(folder, "onnx", 1, decoding=d)
    utts = _corpus(tiny_corpus)
    pieces = [1600, 160, 4000]  # 100 ms, 10 ms, 250 ms
    n_tokens = 0
    for i, (x, _) in enumerate(utts):
        want = _tokens(torch_rec, x, 1600)
        assert _tokens(onnx_rec, x, pieces[i % 3]) == want, f"utterance {i}"
        n_tokens += len(want)
    assert n_tokens > len(utts)  # the comparison is not vacuous


def test_int8_decodes_close_to_fp32(tiny_onnx, tiny_corpus):
    from rnnt.metrics import ErrorCounts, word_errors
    from rnnt.session import Recognizer

    be = OnnxBackend.from_dir(tiny_onnx, threads=1, int8=True)
    assert be.quantization == "int8-dynamic"
    fp32, int8 = load_recognizer(tiny_onnx, "onnx", 1), Recognizer(be, be.tokenizer)
    e32, e8 = ErrorCounts(), ErrorCounts()
    for x, text in _corpus(tiny_corpus):
        e32, e8 = e32 + word_errors(text, fp32.transcribe(x)), e8 + word_errors(text, int8.transcribe(x))
    assert e8.rate <= e32.rate + 0.10, (e32.rate, e8.rate)


def test_batched_encode_equals_one_stream_at_a_time(random_onnx, rng):
    be = OnnxBackend.from_dir(random_onnx)
    mc = be.model_config
    assert be.init_encoder_state(3).h.shape == (mc.enc_layers, 3, mc.enc_hidden)
    assert be.init_predictor_state(2).c.shape == (mc.pred_layers, 2, mc.pred_hidden)
    feats = rng.standard_normal((3, 4 * mc.stack + 3, mc.n_mels)).astype(np.float32)  # 3 extra frames are dropped
    states = [be.init_encoder_state(1) for _ in range(3)]
    states[1] = type(states[1])(rng.standard_normal(states[1].h.shape).astype(np.float32), states[1].c)
    out, state = be.encode(feats, stack_states(states))
    assert out.shape == (3, 4, mc.joint_dim)
    for i, (s_i, s_b) in enumerate(zip(states, unstack_states(state))):
        o, s = be.encode(feats[i : i + 1], s_i)
        np.testing.assert_allclose(out[i : i + 1], o, atol=1e-5)
        np.testing.assert_allclose(s_b.h, s.h, atol=1e-5)
    pred, pstate = be.predict(np.array([0, 5, 7], np.int64), be.init_predictor_state(3))
    assert pred.shape == (3, mc.joint_dim) and pstate.h.shape[1] == 3
    logp = be.join(out[:, 0], pred)
    assert logp.shape == (3, mc.vocab_size)
    np.testing.assert_allclose(np.exp(logp).sum(-1), 1.0, atol=1e-5)  # log-probabilities


def test_errors_are_one_line_checkpoint_errors(random_onnx, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        OnnxBackend.from_dir(str(tmp_path / "missing"))
    with pytest.raises(CheckpointError, match="no readable config.json"):
        OnnxBackend.from_dir(str(tmp_path))
    with pytest.raises(CheckpointError, match="int8"):
        OnnxBackend.from_dir(random_onnx, int8=True)
    with pytest.raises(CheckpointError, match="is a folder"):
        load_recognizer(random_onnx, "torch")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in os.listdir(random_onnx):
        if os.path.isfile(os.path.join(random_onnx, f)):
            (broken / f).write_bytes(open(os.path.join(random_onnx, f), "rb").read())
    (broken / "joint.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="cannot load"):
        OnnxBackend.from_dir(str(broken))


# A PYTHONPATH folder whose torch.py and onnx.py fail to import, as on a machine without them.
_BLOCKER = "raise ImportError('blocked by the test: this run must work without {name}')\n"


def _torch_free_env(tmp_path) -> dict:
    block = tmp_path / "block"
    block.mkdir(exist_ok=True)
    for name in ("torch", "onnx", "torchaudio"):
        (block / f"{name}.py").write_text(_BLOCKER.format(name=name))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(block), REPO])}


def test_runs_without_torch(tiny_onnx, tiny_corpus, tmp_path):
    x, _ = _corpus(tiny_corpus)[0]
    wav = str(tmp_path / "utt.wav")
    from rnnt.audio import write_wav

    write_wav(wav, x)
    script = textwrap.dedent(f"""
        import sys
        from rnnt.audio import load_audio
        from rnnt.inference import load_recognizer
        rec = load_recognizer({tiny_onnx!r}, backend="onnx", threads=1)
        print(rec.transcribe(load_audio({wav!r})))
        assert "torch" not in sys.modules and "onnx" not in sys.modules, "torch or onnx was imported"
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=_torch_free_env(tmp_path), cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == load_recognizer(tiny_onnx, "onnx", 1).transcribe(load_audio(wav))
    check = subprocess.run([sys.executable, "-c", "import torch"], env=_torch_free_env(tmp_path),
                           capture_output=True, text=True)
    assert "blocked by the test" in check.stderr  # the blocker itself works


def test_evaluate_cli_runs_without_torch(tiny_onnx, tiny_corpus, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cli.evaluate", "--backend=onnx", f"--model={tiny_onnx}",
                           f"--manifest={tiny_corpus}", "--limit=2"], env=_torch_free_env(tmp_path), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "WER" in proc.stdout


def test_evaluate_cli_onnx_backend(tiny_onnx, tiny_corpus):
    proc = subprocess.run([sys.executable, "-m", "cli.evaluate", "--backend=onnx", f"--model={tiny_onnx}",
                           f"--manifest={tiny_corpus}", "--limit=2", "--threads=1"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("WER")
