"""Streaming decoding: any chunking of the input gives exactly the tokens of one-piece decoding."""

import numpy as np
import pytest

from rnnt.audio import load_audio
from rnnt.config import DecodingConfig, EndpointConfig
from rnnt.inference import load_recognizer
from rnnt.session import words_from_tokens


def _twenty_seconds(manifest: str) -> np.ndarray:
    import json
    import os

    base = os.path.dirname(manifest)
    parts = []
    for line in open(manifest):
        parts.append(load_audio(os.path.join(base, json.loads(line)["audio"])))
        parts.append(np.zeros(3200, np.float32))
    x = np.concatenate(parts)
    return np.tile(x, int(np.ceil(20 * 16000 / len(x))))[: 20 * 16000]


def _decode(rec, x, sizes):
    s = rec.create_stream()
    toks, i = [], 0
    for n in sizes:
        toks += s.accept(x[i : i + n])
        i += n
    toks += s.accept(x[i:])
    toks += s.finalize()
    return [(t.id, t.time) for t in toks], s.pop_finals()


@pytest.mark.parametrize("which", ["tiny_model", "random_model"])
def test_random_chunks_equal_one_piece(which, request, tiny_corpus):
    rec = load_recognizer(request.getfixturevalue(which), "torch", threads=2)
    x = _twenty_seconds(tiny_corpus)
    whole, _ = _decode(rec, x, [])
    rng = np.random.default_rng(7)
    random_sizes = list(rng.integers(1, 8000, size=200))
    assert _decode(rec, x, random_sizes)[0] == whole
    assert _decode(rec, x, [160] * (len(x) // 160))[0] == whole  # 10 ms pieces
    assert _decode(rec, x, [16000] * 20)[0] == whole  # 1 s pieces
    assert len(whole) > 0


def test_trained_model_transcribes_and_times(tiny_model, tiny_corpus):
    import json
    import os

    rec = load_recognizer(tiny_model, "torch", threads=2)
    line = json.loads(open(tiny_corpus).readline())
    x = load_audio(os.path.join(os.path.dirname(tiny_corpus), line["audio"]))
    toks, finals = _decode(rec, x, [1600] * 100)
    assert len(finals) == 1 and finals[0].final
    assert finals[0].text == line["text"]
    times = [t for _, t in toks]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= len(x) / 16000
    words = finals[0].words
    assert [w.text for w in words] == line["text"].split()
    assert all(w.start < w.end for w in words)


def test_endpoint_splits_utterances(tiny_model, tiny_corpus):
    """Silence closes an utterance (a final with its own words and times); the stream goes on after it."""
    import json
    import os

    base = os.path.dirname(tiny_corpus)
    first = json.loads(open(tiny_corpus).readline())
    speech = load_audio(os.path.join(base, first["audio"]))
    silence = np.zeros(16000 * 3, np.float32)
    x = np.concatenate([speech, silence, speech, silence])
    rec = load_recognizer(tiny_model, "torch", threads=2, endpoint=EndpointConfig(silence_after_speech=1.0))
    s = rec.create_stream()
    s.accept(x)
    s.finalize()
    finals = s.pop_finals()
    assert len(finals) >= 3, [u.text for u in finals]
    assert finals[0].text == first["text"] and finals[0].final
    assert finals[0].end <= len(speech) / 16000 + 1.2  # closed by the silence, not by the end of input
    assert [u.index for u in finals] == list(range(len(finals)))
    assert all(a.start <= b.start for a, b in zip(finals, finals[1:]))
    no_endpoint = load_recognizer(tiny_model, "torch", threads=2, endpoint=EndpointConfig(enabled=False))
    s2 = no_endpoint.create_stream()
    s2.accept(x)
    s2.finalize()
    assert len(s2.pop_finals()) == 1


def test_max_symbols_per_frame_is_respected(random_model):
    rec = load_recognizer(random_model, "torch", decoding=DecodingConfig(max_symbols_per_frame=1))
    s = rec.create_stream()
    toks = s.accept(np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1) + s.finalize()
    times = [t.time for t in toks]
    assert len(times) == len(set(times))


def test_words_from_tokens(random_model):
    rec = load_recognizer(random_model, "torch")
    tok = rec.tokenizer
    ids = tok.encode("open the door")
    words = words_from_tokens(tok, ids, list(range(len(ids))), 0.04)
    assert [w.text for w in words] == ["open", "the", "door"]


@pytest.mark.parametrize("which", ["tiny_model", "random_model"])
def test_beam_chunks_equal_one_piece_and_return_the_final_tokens(which, request, tiny_corpus):
    rec = load_recognizer(request.getfixturevalue(which), "torch", threads=2, decoding=DecodingConfig(beam=4))
    x = _twenty_seconds(tiny_corpus)[: 8 * 16000]
    whole, finals = _decode(rec, x, [])
    assert len(whole) > 0 and len(finals) == 1
    assert _decode(rec, x, [160] * (len(x) // 160))[0] == whole  # 10 ms pieces
    assert _decode(rec, x, list(np.random.default_rng(3).integers(1, 8000, size=60)))[0] == whole
    # accept() and finalize() together return exactly the final hypothesis, each token once
    assert rec.tokenizer.decode([i for i, _ in whole]).split() == finals[0].text.split()
    times = [t for _, t in whole]
    assert times == sorted(times)


def test_beam_splits_at_endpoints_without_losing_tokens(tiny_model, tiny_corpus):
    endpoint = EndpointConfig(silence_after_speech=0.15, silence_no_speech=0.5, max_utterance=4.0)
    rec = load_recognizer(tiny_model, "torch", threads=2, decoding=DecodingConfig(beam=3), endpoint=endpoint)
    x = _twenty_seconds(tiny_corpus)[: 10 * 16000]
    s = rec.create_stream()
    toks = []
    for i in range(0, len(x), 3200):
        toks += s.accept(x[i : i + 3200])
    toks += s.finalize()
    finals = s.pop_finals()
    assert len(finals) >= 3
    for u in finals:
        mine = [t.id for t in toks if t.utterance == u.index]
        assert rec.tokenizer.decode(mine).split() == u.text.split()


def test_beam_with_language_model_transcribes(tiny_model, tiny_corpus, tmp_path):
    import json
    import os

    from rnnt.errors import CheckpointError
    from rnnt.lm import NgramLM
    from tests.conftest import SENTENCES

    plain = load_recognizer(tiny_model, "torch", threads=2)
    tok = plain.tokenizer
    path = str(tmp_path / "lm.npz")
    NgramLM.build([tok.encode(s) for s in SENTENCES], 3, tok.vocab_size, 1, tok.sha1).save(path)
    fused = load_recognizer(tiny_model, "torch", threads=2,
                            decoding=DecodingConfig(beam=4, lm=path, lm_weight=0.2, length_bonus=0.5))
    base = os.path.dirname(tiny_corpus)
    items = [json.loads(line) for line in open(tiny_corpus)]
    audio = [load_audio(os.path.join(base, item["audio"])) for item in items]

    def exact(rec):
        return sum(rec.transcribe(x) == item["text"] for x, item in zip(audio, items))

    assert exact(fused) >= max(exact(plain), len(items) - 3)
    other = str(tmp_path / "other.npz")
    NgramLM.build([[1, 2, 3]], 2, tok.vocab_size, 1, "0" * 40).save(other)
    with pytest.raises(CheckpointError, match="another tokenizer"):
        load_recognizer(tiny_model, "torch", decoding=DecodingConfig(beam=4, lm=other))
