"""The token n-gram language model: normalized distributions, file round trip, the build command."""

import os
import subprocess
import sys

import numpy as np
import pytest

from rnnt.errors import CheckpointError
from rnnt.lm import BOS, NgramLM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sequences(rng, n=400, vocab=12):
    # a little grammar: 1 is always followed by 2, plus noise
    out = []
    for _ in range(n):
        seq = list(rng.integers(3, vocab, size=rng.integers(1, 10)))
        seq[rng.integers(0, len(seq)):0] = [1, 2]
        out.append([int(x) for x in seq])
    return out


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("min_count", [1, 3])
def test_every_context_gives_a_distribution(order, min_count, rng):
    lm = NgramLM.build(_sequences(rng), order, 12, min_count)
    for ctx in [lm.start(), (BOS, 1), (1, 2, 5), (11, 11, 11), (7,), (4, 1)]:
        lp = lm.logprobs(ctx)
        assert lp.shape == (12,) and lp[BOS] == -np.inf
        assert np.exp(lp.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)


def test_learns_what_follows(rng):
    lm = NgramLM.build(_sequences(rng), 3, 12, 1)
    after_one = lm.logprobs(lm.advance(lm.start(), 1))
    assert int(np.argmax(after_one)) == 2 and np.exp(after_one[2]) > 0.8
    assert lm.advance((5, 6, 7), 8) == (7, 8)
    assert lm.score([1, 2, 5]) > lm.score([1, 5, 2])


def test_save_load_round_trip_and_checks(rng, tmp_path):
    lm = NgramLM.build(_sequences(rng), 4, 12, 2, tokenizer_sha1="abc")
    path = str(tmp_path / "lm.npz")
    lm.save(path)
    back = NgramLM.load(path, tokenizer_sha1="abc", vocab_size=12)
    for ctx in [lm.start(), (1, 2, 5), (3, 4, 5), (9,)]:
        np.testing.assert_array_equal(back.logprobs(ctx), lm.logprobs(ctx))
    with pytest.raises(CheckpointError, match="another tokenizer"):
        NgramLM.load(path, tokenizer_sha1="def")
    with pytest.raises(CheckpointError, match="12 tokens"):
        NgramLM.load(path, vocab_size=40)
    with pytest.raises(CheckpointError, match="does not exist"):
        NgramLM.load(str(tmp_path / "missing.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a language model"):
        NgramLM.load(str(bad))


def test_packed_tables_store_only_contexts_with_continuations(rng):
    lm = NgramLM.build(_sequences(rng), 4, 12, 3)
    for k, table in enumerate(lm.tables, start=1):
        assert table.ctx.shape == (len(table), k)
        assert np.all(np.diff(table.off) > 0)  # a context whose every n-gram was dropped is not stored
        for row in table.ctx.tolist():
            toks, lp, bow = table.get(tuple(row))
            assert len(toks) == len(lp) > 0 and bow <= 0
    seen = {tuple(r) for r in lm.tables[2].ctx.tolist()}
    unseen = next(c for c in ((a, b, c) for a in range(12) for b in range(12) for c in range(12)) if c not in seen)
    assert lm.tables[2].get(unseen) is None
    np.testing.assert_array_equal(lm.logprobs(unseen), lm.logprobs(unseen[1:]))  # it backs off exactly


def _train_lm(*args):
    return subprocess.run([sys.executable, "-m", "cli.train_lm", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_train_lm_command(tiny_corpus, tmp_path):
    out = tmp_path / "lm.npz"
    proc = _train_lm(f"--text={tiny_corpus}", f"--out={out}", "--order=3",
                     f"--tokenizer={os.path.join(REPO, 'models', 'en_small', 'onnx', 'tokenizer.model')}",
                     f"--eval_text={tiny_corpus}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "perplexity" in proc.stdout and out.exists()
    lm = NgramLM.load(str(out), vocab_size=256)
    assert lm.order == 3
    once = next(line for line in proc.stdout.splitlines() if line.startswith("wrote"))
    proc = _train_lm(f"--text={tiny_corpus},{tiny_corpus}", f"--out={out}", "--order=3",
                     f"--tokenizer={os.path.join(REPO, 'models', 'en_small', 'onnx', 'tokenizer.model')}")
    assert proc.returncode == 0 and once in proc.stdout  # a sentence given twice is counted once

    for args, message in [([f"--text={tmp_path / 'missing.txt'}"], "does not exist"),
                          ([], "--text is required"),
                          ([f"--text={tiny_corpus}", "--tokenizer=/nonexistent.model"], "cannot read tokenizer")]:
        proc = _train_lm(*args, f"--out={tmp_path / 'x.npz'}")
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert message in proc.stderr


def test_auto_finds_the_language_model_beside_the_model(tiny_model, tmp_path, caplog):
    import shutil

    from rnnt.config import DecodingConfig
    from rnnt.inference import find_lm, load_recognizer

    shipped = os.path.join(REPO, "models", "en_small")
    assert find_lm(os.path.join(shipped, "model.pt")) == os.path.join(shipped, "lm.npz")
    assert find_lm(os.path.join(shipped, "onnx", "int8")) == os.path.join(shipped, "lm.npz")
    onnx = load_recognizer(os.path.join(shipped, "onnx"), "onnx")
    assert onnx.lm is not None and onnx.decoding.lm == os.path.join(shipped, "lm.npz")
    assert load_recognizer(os.path.join(shipped, "onnx"), "onnx", decoding=DecodingConfig(lm="")).lm is None

    model = tmp_path / "model.pt"
    shutil.copy(tiny_model, model)
    assert load_recognizer(str(model)).lm is None  # nothing beside it
    tok = load_recognizer(str(model)).tokenizer
    NgramLM.build([tok.encode("the cat sat on the mat")], 2, tok.vocab_size, 1, tok.sha1).save(str(tmp_path / "lm.npz"))
    assert load_recognizer(str(model)).lm is not None
    NgramLM.build([[1, 2]], 2, tok.vocab_size, 1, "f" * 40).save(str(tmp_path / "lm.npz"))
    with caplog.at_level("WARNING"):
        rec = load_recognizer(str(model))  # an LM for another tokenizer is skipped with a warning
    assert rec.lm is None and "another tokenizer" in caplog.text


def _lm_text(*args):
    return subprocess.run([sys.executable, "-m", "cli.lm_text", "--sources=generated,words", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_lm_text_writes_unique_sentences_and_leaves_out_held_out_ones(tmp_path):
    from rnnt.text import normalize

    out = tmp_path / "lm.txt"
    proc = _lm_text("--generated=300", "--words=40", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = out.read_text().splitlines()
    assert 300 < len(lines) <= 340 and len(set(lines)) == len(lines)
    assert all(line == normalize(line) and line for line in lines)
    assert any(line.startswith(("what is", "the train leaves at")) for line in lines)

    held = tmp_path / "test.tsv"  # the corpus's layout: raw, spoken, text
    held.write_text("".join(f"raw\tspoken\t{line}\n" for line in lines[:25]))
    proc = _lm_text("--generated=300", "--words=40", f"--out={out}", f"--exclude={held}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = out.read_text().splitlines()
    assert again == lines[25:] and "25 held-out sentences excluded" in proc.stdout

    proc = _lm_text(f"--out={out}", f"--exclude={tmp_path / 'missing.tsv'}")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "does not exist" in proc.stderr
