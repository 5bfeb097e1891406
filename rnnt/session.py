"""Streaming recognition: a shared ``Recognizer`` and one ``Stream`` per audio source.

Legend: N samples, T_in feature frames, F mel bins, S stack factor, C encoder frames per chunk,
J joint width.

A stream turns samples into features (leftover samples carried), buffers feature frames until a full
chunk of C * S frames exists, runs the encoder on exactly that chunk with the carried state, then
greedy or beam search frame by frame. Because the encoder always sees the same chunks whatever sizes the
audio arrived in, decoding in 10 ms pieces or 1 s pieces gives identical tokens. ``accept`` returns only
tokens that can no longer change (with beam search, those all hypotheses share); ``partial`` shows the
best hypothesis so far. Endpoints are checked at
chunk boundaries; at an endpoint the utterance becomes final and the predictor state resets (the encoder
state too when ``EndpointConfig.reset_encoder``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from rnnt.backend import Backend
from rnnt.config import DecodingConfig, EndpointConfig
from rnnt.endpoint import is_endpoint
from rnnt.features import StreamingFeatures
from rnnt.search import BeamSearch, GreedySearch
from rnnt.tokenizer import Tokenizer


@dataclass(frozen=True)
class Token:
    id: int
    piece: str
    time: float  # seconds from the start of the stream
    utterance: int  # index of the utterance it belongs to


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the start of the stream
    end: float


@dataclass(frozen=True)
class Utterance:
    index: int
    text: str
    words: list[Word] = field(default_factory=list)
    start: float = 0.0  # seconds: first word start (or utterance start when empty)
    end: float = 0.0  # seconds: last word end (or utterance end when empty)
    final: bool = False


class Recognizer:
    """The model, tokenizer and decoding settings shared by any number of streams."""

    def __init__(self, backend: Backend, tokenizer: Tokenizer, decoding: DecodingConfig | None = None,
                 endpoint: EndpointConfig | None = None) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.decoding = decoding or DecodingConfig()
        if self.decoding.lm == "auto":  # resolved by load_recognizer, which knows the model's path
            self.decoding = replace(self.decoding, lm="")
        self.endpoint = endpoint or EndpointConfig(enabled=False)
        fc, mc = backend.feature_config, backend.model_config
        if tokenizer.vocab_size != mc.vocab_size:
            from rnnt.errors import CheckpointError

            raise CheckpointError(f"tokenizer has {tokenizer.vocab_size} ids but the model outputs {mc.vocab_size}")
        self.frame_shift = mc.stack * fc.hop_length / fc.sample_rate  # seconds per encoder frame
        self.lm = None
        if self.decoding.lm:
            from rnnt.lm import NgramLM

            self.lm = NgramLM.load(self.decoding.lm, tokenizer.sha1, mc.vocab_size)

    def new_search(self) -> GreedySearch | BeamSearch:
        """A fresh search for one utterance, greedy or beam as ``decoding`` says."""
        d = self.decoding
        if d.greedy:
            return GreedySearch(self.backend, d.max_symbols_per_frame)
        return BeamSearch(self.backend, d.beam, d.max_symbols_per_frame, self.lm, d.lm_weight, d.length_bonus)

    def create_stream(self) -> "Stream":
        return Stream(self)

    def transcribe(self, samples: np.ndarray) -> str:
        """Whole-signal convenience: the text of all utterances, joined by spaces."""
        stream = self.create_stream()
        stream.accept(samples)
        stream.finalize()
        return " ".join(u.text for u in stream.pop_finals() if u.text)


class Stream:
    """One audio source's state: features, encoder state, hypothesis and endpoint counters."""

    def __init__(self, recognizer: Recognizer) -> None:
        self.rec = recognizer
        self._features = StreamingFeatures(recognizer.backend.feature_config)
        mc = recognizer.backend.model_config
        self._chunk = recognizer.decoding.chunk_frames * mc.stack  # feature frames per encoder call
        self._pending = np.zeros((0, mc.n_mels), np.float32)  # (T_in, F) frames not yet encoded
        self._finals: list[Utterance] = []
        self.frames_done = 0  # encoder frames decoded since the stream began
        self.utterance_index = 0
        self._finished = False
        self._start_utterance()

    def _start_utterance(self) -> None:
        if self.frames_done == 0 or self.rec.endpoint.reset_encoder:
            self._enc_state = self.rec.backend.init_encoder_state(1)
        self._search = self.rec.new_search()
        self._emitted = 0  # tokens of this utterance already returned by accept/finalize
        self._utt_start_frame = self.frames_done

    def accept(self, samples: np.ndarray) -> list[Token]:
        """Feed (N,) float32 16 kHz samples; return the tokens decoded from them."""
        if self._finished:
            raise RuntimeError("accept() after finalize(); create a new stream")
        frames = self._features.accept(samples)
        self._pending = np.concatenate([self._pending, frames]) if len(self._pending) else frames
        out: list[Token] = []
        while len(self._pending) >= self._chunk:
            chunk, self._pending = self._pending[: self._chunk], self._pending[self._chunk:]
            out += self._decode_chunk(chunk)
            out += self._check_endpoint()
        return out

    def finalize(self) -> list[Token]:
        """Decode what is buffered (the last partial chunk) and close the current utterance."""
        if self._finished:
            return []
        stack = self.rec.backend.model_config.stack
        usable = len(self._pending) // stack * stack
        out = self._decode_chunk(self._pending[:usable]) if usable else []
        self._pending = self._pending[:0]
        out += self._close_utterance()
        self._finished = True
        return out

    def _decode_chunk(self, feats: np.ndarray) -> list[Token]:
        enc, self._enc_state = self.rec.backend.encode(feats[None], self._enc_state)  # (1, C, J)
        self._search.advance(enc[0], self.frames_done)
        self.frames_done += enc.shape[1]
        return self._emit(self._search.stable_length())

    def _emit(self, upto: int) -> list[Token]:
        """Tokens ``_emitted .. upto`` of the best hypothesis (stable ones: they never change)."""
        if upto <= self._emitted:
            return []
        ids, frames = self._search.span(self._emitted, upto)
        tok, shift = self.rec.tokenizer, self.rec.frame_shift
        out = [Token(i, tok.piece(i), f * shift, self.utterance_index) for i, f in zip(ids, frames)]
        self._emitted = upto
        return out

    def _check_endpoint(self) -> list[Token]:
        shift = self.rec.frame_shift
        last_frame = self._search.last_frame()
        last = last_frame + 1 if last_frame is not None else self._utt_start_frame
        if is_endpoint(self.rec.endpoint, (self.frames_done - last) * shift,
                       (self.frames_done - self._utt_start_frame) * shift, last_frame is not None):
            out = self._close_utterance()
            self._start_utterance()
            return out
        return []

    def _close_utterance(self) -> list[Token]:
        """Make the utterance final; returns the best hypothesis' tokens not yet returned."""
        out = self._emit(self._search.length())
        self._finals.append(self._utterance(final=True))
        self.utterance_index += 1
        return out

    def _utterance(self, final: bool) -> Utterance:
        ids, frames = self._search.tokens()
        words = words_from_tokens(self.rec.tokenizer, ids, frames, self.rec.frame_shift)
        begin, end = self._utt_start_frame * self.rec.frame_shift, self.frames_done * self.rec.frame_shift
        return Utterance(self.utterance_index, " ".join(w.text for w in words), words,
                         words[0].start if words else begin, words[-1].end if words else end, final)

    @property
    def revision(self) -> tuple[int, int]:
        """Changes whenever ``partial`` may have: a cheap test before building it."""
        return self.utterance_index, self._search.revision()

    @property
    def partial(self) -> Utterance:
        """The current (unfinished) utterance so far."""
        return self._utterance(final=False)

    def pop_finals(self) -> list[Utterance]:
        """Utterances closed since the last call (by an endpoint or ``finalize``)."""
        out, self._finals = self._finals, []
        return out

    @property
    def seconds_decoded(self) -> float:
        return self.frames_done * self.rec.frame_shift


def words_from_tokens(tokenizer: Tokenizer, tokens: list[int], frames: list[int], frame_shift: float) -> list[Word]:
    """Group word pieces into words; a word spans its first token's frame to one frame past its last."""
    groups: list[tuple[list[int], int, int]] = []
    for tok, fr in zip(tokens, frames):
        if not groups or tokenizer.starts_word(tok):
            groups.append(([tok], fr, fr))
        else:
            groups[-1][0].append(tok)
            groups[-1] = (groups[-1][0], groups[-1][1], fr)
    words = [Word(tokenizer.decode(ids).strip(), f0 * frame_shift, (f1 + 1) * frame_shift) for ids, f0, f1 in groups]
    return [w for w in words if w.text]
