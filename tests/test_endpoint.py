"""Endpoint rules (rnnt/endpoint.py) and what they do to a long live stream.

The long-stream test repeats speech + silence for minutes and checks that every repetition becomes one
final with the same text and the same timing relative to its repetition, early and late: no drift of
the model state or of the clock. ``benchmarks/bench_stream_hour.py`` runs the same check over an hour.
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


def test_silence_alone_closes_empty_utterances_every_silence_no_speech(tiny_model):
    stream = _recognizer(tiny_model).create_stream()
    closed = _feed(stream, np.zeros(SAMPLE_RATE * 10, np.float32))
    times = [t for t, _ in closed]
    assert len(times) == 4 and all(not u.text for _, u in closed)
    for a, b in zip([0.0] + times, times):
        assert 2.4 - 1e-6 <= b - a <= 2.4 + CHUNK


def test_speech_closes_after_silence_after_speech(tiny_model, speech):
    stream = _recognizer(tiny_model).create_stream()
    x = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(SAMPLE_RATE * 2, np.float32)])
    closed = [(t, u) for t, u in _feed(stream, x) if u.text]
    assert len(closed) == 1
    t, u = closed[0]
    assert 1.2 - 1e-6 <= t - u.words[-1].end < 1.2 + CHUNK  # 1.2 s after the last token, at a chunk edge
    assert u.final and u.index == 0


def test_continuous_speech_is_cut_at_max_utterance(tiny_model, speech):
    stream = _recognizer(tiny_model, max_utterance=3.0, silence_after_speech=5.0, silence_no_speech=5.0).create_stream()
    closed = _feed(stream, np.tile(speech, 8))
    times = [t for t, _ in closed]
    assert len(times) >= int(8 * len(speech) / SAMPLE_RATE / (3.0 + CHUNK)) - 1
    for a, b in zip([0.0] + times, times):
        assert b - a <= 3.0 + CHUNK + 1e-9


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
    """One final per repetition; from the second on (the first meets a fresh encoder state) the same text
    at the same offset within its repetition."""
    texts = [u.text for u in finals]
    offsets = [round(u.words[0].start - int(u.words[0].start / period) * period, 4) for u in finals]
    assert texts[0]
    assert set(texts[1:]) == {texts[1]}, f"text drifted: early {texts[1]!r}, later {sorted(set(texts[1:]))}"
    assert max(offsets[1:]) - min(offsets[1:]) < 1e-3, f"timing drifted: {sorted(set(offsets))}"


def test_a_long_stream_with_pauses_gives_one_final_per_utterance_without_drift(tiny_model, speech):
    """Eight minutes of speech and pauses (the 30-minute and hour runs are in the benchmark)."""
    pattern = repeated(speech)
    reps = int(8 * 60 * SAMPLE_RATE / len(pattern))
    stream = _recognizer(tiny_model).create_stream()
    finals = []
    for _ in range(reps):
        finals += [u for _, u in _feed(stream, pattern) if u.text]
    stream.finalize()
    finals += [u for u in stream.pop_finals() if u.text]
    assert len(finals) == reps
    assert [u.index for u in finals] == sorted(u.index for u in finals)
    check_no_drift(finals, len(pattern) / SAMPLE_RATE)
    assert stream.seconds_decoded == pytest.approx(reps * len(pattern) / SAMPLE_RATE, abs=0.05)
