"""CPU speed of recognizers on the same audio: real-time factor, per-chunk compute, multi-stream capacity.

Legend: N streams, T_in feature frames, F mel bins, S stack factor, C encoder frames per chunk, J joint width.

Everything here works through the ``Backend`` protocol and ``Recognizer``, so the torch and onnxruntime
backends are timed by the same code. Needs no torch itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from rnnt.audio import SAMPLE_RATE, load_audio
from rnnt.backend import Backend
from rnnt.config import DecodingConfig
from rnnt.errors import AudioError
from rnnt.features import StreamingFeatures
from rnnt.metrics import ErrorCounts, word_errors
from rnnt.search import Hypothesis, greedy_search, init_hypothesis
from rnnt.session import Recognizer
from rnnt.state import stack_states, unstack_states

BENCH_SENTENCES = (
    "the quick brown fox jumps over the lazy dog", "please call stella and ask her to bring these things",
    "we also need a small plastic snake and a big toy frog for the kids",
    "she can scoop these things into three red bags", "turn left at the second light and go forward ten meters",
    "my flight leaves at seven fifteen tomorrow morning",
)


@dataclass(frozen=True)
class Clip:
    """One utterance of benchmark audio."""

    samples: np.ndarray  # (N_samples,) float32 16 kHz
    text: str  # reference transcript ("" when unknown)
    name: str = ""


@dataclass
class StreamingRun:
    """One recognizer decoding every utterance as a stream fed one chunk of audio at a time."""

    name: str
    threads: int
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0  # wall clock, decoding only
    cpu_seconds: float = 0.0  # CPU time of the process over the same span (on a busy machine: < wall)
    chunk_seconds: list[float] = field(default_factory=list)  # compute per chunk of audio fed
    tokens: list[list[int]] = field(default_factory=list)  # per utterance
    texts: list[str] = field(default_factory=list)  # per utterance

    @property
    def rtf(self) -> float:
        return self.compute_seconds / self.audio_seconds if self.audio_seconds else 0.0

    @property
    def cpu_rtf(self) -> float:
        """CPU seconds per audio second: the RTF with a core to itself, on a machine others also use."""
        return self.cpu_seconds / self.audio_seconds if self.audio_seconds else 0.0

    def chunk_ms(self, q: float) -> float:
        """The ``q``-th percentile of per-chunk compute, in milliseconds."""
        return float(np.percentile(self.chunk_seconds, q) * 1e3) if self.chunk_seconds else 0.0

    def wer(self, refs: list[str]) -> float | None:
        """Corpus WER against ``refs`` (None when there are no references)."""
        if not any(refs):
            return None
        total = ErrorCounts()
        for r, h in zip(refs, self.texts):
            total = total + word_errors(r, h)
        return total.rate


def chunk_samples(recognizer: Recognizer) -> int:
    """Samples of audio that make one encoder chunk (C * S feature frames)."""
    fc, mc = recognizer.backend.feature_config, recognizer.backend.model_config
    return recognizer.decoding.chunk_frames * mc.stack * fc.hop_length


def time_streaming(recognizer: Recognizer, utterances: list[Clip], name: str = "", threads: int = 1,
                   warmup: bool = True) -> StreamingRun:
    """Decode each utterance through ``Stream.accept`` in chunk-sized pieces and time every call."""
    piece = chunk_samples(recognizer)
    if warmup and utterances:
        recognizer.transcribe(utterances[0].samples[: 8 * piece])  # first-run allocations, lazy init
    run = StreamingRun(name, threads)
    cpu0 = time.process_time()
    for utt in utterances:
        stream = recognizer.create_stream()
        ids: list[int] = []
        for start in range(0, len(utt.samples), piece):
            t0 = time.perf_counter()
            ids += [t.id for t in stream.accept(utt.samples[start : start + piece])]
            run.chunk_seconds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ids += [t.id for t in stream.finalize()]
        run.compute_seconds += time.perf_counter() - t0
        run.tokens.append(ids)
        run.texts.append(" ".join(u.text for u in stream.pop_finals() if u.text))
        run.audio_seconds += len(utt.samples) / SAMPLE_RATE
    run.cpu_seconds = time.process_time() - cpu0
    run.compute_seconds += sum(run.chunk_seconds)
    return run


def decode_streams_batched(backend: Backend, decoding: DecodingConfig, audios: list[np.ndarray],
                           budget_seconds: float | None = None) -> tuple[float | None, list[Hypothesis]]:
    """Decode N streams together: per chunk, one encoder call on the stacked (N, C * S, F) features and
    states, then greedy search per stream (whatever ``decoding.beam`` says: capacity is measured greedy).
    Audio is fed in chunk-sized pieces, as live sources deliver it; the last partial chunk is not decoded
    (a live stream has not finished).

    Returns the compute seconds (None as soon as they exceed ``budget_seconds``) and each stream's
    hypothesis.
    """
    fc, mc = backend.feature_config, backend.model_config
    chunk = decoding.chunk_frames * mc.stack  # feature frames per encoder call
    piece = chunk * fc.hop_length
    feats = [StreamingFeatures(fc) for _ in audios]
    pending = [np.zeros((0, mc.n_mels), np.float32) for _ in audios]  # (T_in, F) per stream
    states = [backend.init_encoder_state(1) for _ in audios]
    hyps = [init_hypothesis(backend) for _ in audios]
    frame = 0
    t0 = time.perf_counter()
    for start in range(0, min(len(a) for a in audios), piece):
        pending = [np.concatenate([p, f.accept(a[start : start + piece])]) for p, f, a in zip(pending, feats, audios)]
        while min(len(p) for p in pending) >= chunk:
            batch = np.stack([p[:chunk] for p in pending])  # (N, C * S, F)
            pending = [p[chunk:] for p in pending]
            enc, state = backend.encode(batch, stack_states(states))  # (N, C, J)
            states = unstack_states(state)
            for i, hyp in enumerate(hyps):
                greedy_search(backend, enc[i], hyp, frame, decoding.max_symbols_per_frame)
            frame += enc.shape[1]
        if budget_seconds is not None and time.perf_counter() - t0 > budget_seconds:
            return None, hyps
    return time.perf_counter() - t0, hyps


def max_realtime_streams(backend: Backend, decoding: DecodingConfig, samples: np.ndarray, max_streams: int = 256
                         ) -> tuple[int, dict[int, float | None]]:
    """Largest N whose batched decoding of ``samples`` (one clip, shifted per stream so the streams
    differ) keeps up with real time; doubling, then bisection to within 1/16.

    Returns (N, {tried N: compute seconds per second of audio, None when it fell behind}).
    """
    audio_s = len(samples) / SAMPLE_RATE
    shift = SAMPLE_RATE // 7  # ~143 ms between streams
    trials: dict[int, float | None] = {}

    def sustained(n: int) -> bool:
        audios = [np.roll(samples, i * shift) for i in range(n)]
        for _ in range(2):  # a failure is tried once more: one stall of a shared machine is not capacity
            t, _ = decode_streams_batched(backend, decoding, audios, audio_s)
            if t is not None:
                break
        trials[n] = None if t is None else t / audio_s
        return t is not None

    decode_streams_batched(backend, decoding, [samples[: 10 * SAMPLE_RATE // 4]])  # warm-up
    lo, hi = 0, 1
    while hi <= max_streams and sustained(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, max_streams + 1)
    while hi - lo > max(1, lo // 16):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if sustained(mid) else (lo, mid)
    return lo, trials


def stream_capacity(backends: list[tuple[str, Backend]], decoding: DecodingConfig, samples: np.ndarray, threads: int,
                    max_streams: int = 256) -> dict:
    """``max_realtime_streams`` for each named backend (built with ``threads`` threads), as one dict."""
    out = {"threads": threads, "audio_seconds": len(samples) / SAMPLE_RATE, "streams": {}, "trials": {}}
    for name, backend in backends:
        out["streams"][name], out["trials"][name] = max_realtime_streams(backend, decoding, samples, max_streams)
    return out


def load_utterances(entries: list[tuple[str, str]], limit: int = 0) -> list[Clip]:
    """(audio path, text) pairs -> loaded utterances (the first ``limit`` when > 0)."""
    entries = entries[:limit] if limit > 0 else entries
    return [Clip(load_audio(path), text, os.path.basename(path)) for path, text in entries]


def espeak_utterances(sentences: tuple[str, ...] = BENCH_SENTENCES) -> list[Clip]:
    """Synthesize ``sentences`` with espeak-ng (the default benchmark audio when no manifest is given)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AudioError("espeak-ng was not found to synthesize benchmark audio; pass --manifest or install it "
                         "(Debian: apt-get install espeak-ng)")
    out = []
    with tempfile.TemporaryDirectory() as d:
        for i, text in enumerate(sentences):
            path = os.path.join(d, f"s{i}.wav")
            try:
                subprocess.run([exe, "-v", "en-us", "-w", path, text], check=True, capture_output=True)
            except subprocess.CalledProcessError as e:
                raise AudioError(f"espeak-ng failed on {text!r}: {e.stderr.decode(errors='replace').strip()}") from e
            out.append(Clip(load_audio(path), text, f"espeak-{i}"))
    return out


def summarize(runs: list[StreamingRun], refs: list[str]) -> list[dict]:
    """One row per run: RTF, chunk compute p50/p95, WER, and how many utterances give exactly the tokens
    of the first run (the reference, torch fp32)."""
    rows = []
    for run in runs:
        same = sum(a == b for a, b in zip(run.tokens, runs[0].tokens))
        rows.append({"name": run.name, "threads": run.threads, "rtf": run.rtf, "cpu_rtf": run.cpu_rtf,
                     "chunk_ms_p50": run.chunk_ms(50), "chunk_ms_p95": run.chunk_ms(95), "wer": run.wer(refs),
                     "same_tokens_as_reference": same, "utterances": len(run.tokens),
                     "audio_seconds": run.audio_seconds, "compute_seconds": run.compute_seconds,
                     "cpu_seconds": run.cpu_seconds})
    return rows


def machine_info() -> dict:
    """CPU model, cores, load and package versions, recorded next to the figures."""
    from importlib import metadata

    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    versions = {}
    for pkg in ("onnxruntime", "torch", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_1min": load, "versions": versions}
