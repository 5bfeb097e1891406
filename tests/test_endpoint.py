"""Endpoint rules (rnnt/endpoint.py) and what they do to a long live stream.

The long-stream test repeats speech + silence for minutes and checks that every repetition yields the
same finals (texts and timing relative to the repetition), early and late: no drift of the model state
or of the clock. ``benchmarks/bench_stream_hour.py`` runs the same check over an hour of audio read from
a file.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from rnnt.audio import SAMPLE_RATE, load_audio
from rnnt.config import EndpointConfig
from rnnt.endpoint import is_endpoint

CFG = EndpointConfig()  # 2.4 s with nothing decoded, 1.2 s after speech, 20 s at most
CHUNK = 0.16  # seconds per encoder call of the tiny model (chunk_frames 4 x stack 4 x 10 ms)


def test_rules():
    assert not is_endpoint(CFG, trailing_silence=2.3, utterance_length=2.3, has_speech=False)
    assert is_endpoint(CFG, trailing_silence=2.4, utterance_length=2.4, has_speech=False)
    assert not is_endpoint(CFG, trailing_silence=1.1, utterance_length=5.0, has_speech=True)
    assert is_endpoint(CFG, trailing_silence=1.2, utterance_length=5.0, has_speech=True)
    assert is_endpoint(CFG, trailing_silence=0.0, utterance_length=20.0, has_speech=True)  # the maximum
    assert is_endpoint(CFG, trailing_silence=0.0, utterance_length=20.0, has_speech=False)
    assert not is_endpoint(CFG, trailing_silence=0.0, utterance_length=19.9, has_speech=True)
    off = EndpointConfig(enabled=False)
    assert not is_endpoint(off, trailing_silence=100.0, utterance_length=100.0, has_speech=True)
    custom = EndpointConfig(silence_no_speech=1.0, silence_after_speech=0.5, max_utterance=8.0)
    assert is_endpoint(custom, 0.5, 3.0, True) and not is_endpoint(custom, 0.9, 3.0, False)


def test_bad_endpoint_values_are_config_errors():
    from rnnt.errors import ConfigError

    for bad in ({"silence_no_speech": 0}, {"silence_after_speech": -1}, {"max_utterance": 0}):
        with pytest.raises(ConfigError):
            EndpointConfig(**bad)


@pytest.fixture(scope="module")
def speech(tiny_corpus) -> np.ndarray:
    """(N,) one training utterance at 16 kHz."""
    return load_audio(os.path.join(os.path.dirname(tiny_corpus), "u16.wav"))


@pytest.fixture(scope="module")
def recognised(tiny_model) -> np.ndarray:
    """(N,) a sentence the model recognises wherever it starts, and a check that the model keeps silent in
    silence: without both, repetitions cannot be compared (a model that emits words in silence runs its
    own endpoint cycle there, which need not lock to the repeated audio)."""
    from tests.test_live import recognised_sentence

    _, wav = recognised_sentence(tiny_model)
    heard = _recognizer(tiny_model).transcribe(np.zeros(SAMPLE_RATE * 6, np.float32))
    if heard:
        pytest.fail(f"the tiny_model fixture hears {heard!r} in 6 s of digital silence; the drift check needs a "
                    "model that emits nothing there", pytrace=False)
    return load_audio(wav)


def _recognizer(model: str, **endpoint):
    from rnnt.inference import load_recognizer

    return load_recognizer(model, endpoint=EndpointConfig(**endpoint))


def _feed(stream, x: np.ndarray, block: int = 1600) -> list[tuple[float, object]]:
    """Feed ``x`` in blocks; (seconds decoded when it closed, utterance) for every final."""
    closed = []
    for i in range(0, len(x), block):
        stream.accept(x[i:i + block])
        closed += [(stream.seconds_decoded, u) for u in stream.pop_finals()]
    return closed


def closes_obey_the_rules(closed, cfg: EndpointConfig) -> None:
    """Each utterance closed at the first chunk edge where one of the rules held."""
    for (prev, _), (t, u) in zip([(0.0, None)] + closed, closed):
        length = t - prev
        if length >= cfg.max_utterance - 1e-6:
            assert length < cfg.max_utterance + CHUNK
        elif u.text:  # speech: trailing silence after its last token
            assert cfg.silence_after_speech - 1e-6 <= t - u.words[-1].end < cfg.silence_after_speech + CHUNK, (t, u)
        else:  # no words: nothing decoded (silence_no_speech), or only a word-boundary piece (after speech)
            assert cfg.silence_after_speech - 1e-6 <= length < cfg.silence_no_speech + CHUNK, (t, prev)


def test_silence_alone_keeps_closing_utterances(tiny_model):
    """Whatever the model makes of ten seconds of silence, every utterance closes by the rules."""
    stream = _recognizer(tiny_model).create_stream()
    closed = _feed(stream, np.zeros(SAMPLE_RATE * 10, np.float32))
    assert len(closed) >= 3
    closes_obey_the_rules(closed, CFG)


def test_speech_closes_after_silence_after_speech(tiny_model, speech):
    stream = _recognizer(tiny_model).create_stream()
    x = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(SAMPLE_RATE * 2, np.float32)])
    closed = _feed(stream, x)
    assert sum(bool(u.text) for _, u in closed) >= 1
    closes_obey_the_rules(closed, CFG)
    assert [u.index for _, u in closed] == list(range(len(closed))) and all(u.final for _, u in closed)


def test_continuous_speech_is_cut_at_max_utterance(tiny_model, speech):
    stream = _recognizer(tiny_model, max_utterance=3.0, silence_after_speech=5.0, silence_no_speech=5.0).create_stream()
    closed = _feed(stream, np.tile(speech, 8))
    times = [t for t, _ in closed]
    assert len(times) >= int(8 * len(speech) / SAMPLE_RATE / (3.0 + CHUNK)) - 1
    for a, b in zip([0.0] + times, times):
        assert b - a <= 3.0 + CHUNK + 1e-9
    closes_obey_the_rules(closed, EndpointConfig(max_utterance=3.0, silence_after_speech=5.0, silence_no_speech=5.0))


def test_disabled_endpointing_keeps_one_utterance(tiny_model, speech):
    stream = _recognizer(tiny_model, enabled=False).create_stream()
    assert _feed(stream, np.tile(np.concatenate([speech, np.zeros(SAMPLE_RATE * 3, np.float32)]), 3)) == []
    stream.finalize()
    assert len(stream.pop_finals()) == 1


def repeated(speech: np.ndarray, chunk_samples: int = int(CHUNK * SAMPLE_RATE)) -> np.ndarray:
    """Half a second of silence, the speech, two seconds of silence; padded to whole encoder chunks so
    that every repetition meets the encoder at the same phase."""
    n = len(speech) + int(2.5 * SAMPLE_RATE)
    pattern = np.zeros(-(-n // chunk_samples) * chunk_samples, np.float32)
    pattern[SAMPLE_RATE // 2: SAMPLE_RATE // 2 + len(speech)] = speech
    return pattern


def check_no_drift(finals, period: float) -> None:
    """Every repetition after the first (which meets a fresh encoder state) yields the same finals: the
    same texts at the same offsets within the repetition, early and late. ``finals`` in stream order."""
    reps: dict[int, list] = {}
    for u in finals:
        k = int((u.words[0].start + 1e-6) // period)
        reps.setdefault(k, []).append((u.text, round(u.words[0].start - k * period, 3)))
    assert sorted(reps) == list(range(len(reps))), "a repetition produced no final"
    early = reps[1]  # the last repetition may still be open when the stream stops: not compared
    drifted = {k: v for k, v in reps.items() if 1 <= k < len(reps) - 1 and v != early}
    assert not drifted, f"repetition 1 gave {early}, later ones differ: {dict(list(drifted.items())[:3])}"
    assert any(text for text, _ in early)


def test_a_long_stream_with_pauses_gives_the_same_finals_early_and_late(tiny_model, recognised):
    """Thirty minutes of speech and pauses in 100 ms blocks (an hour: benchmarks/bench_stream_hour.py)."""
    pattern = repeated(recognised)
    period = len(pattern) / SAMPLE_RATE
    reps = int(30 * 60 / period)
    stream = _recognizer(tiny_model).create_stream()
    closed = []
    for _ in range(reps):
        closed += _feed(stream, pattern)
    closes_obey_the_rules(closed, CFG)
    check_no_drift([u for _, u in closed if u.text], period)
    assert stream.seconds_decoded == pytest.approx(reps * period, abs=2 * CHUNK)  # all but the last chunk
