"""Benchmark (not a test): stream an hour of audio from a file through the live pipeline.

    python benchmarks/bench_stream_hour.py --model exp/run/ckpt-00010000.pt            # synthesized hour
    python benchmarks/bench_stream_hour.py --model M --path long_talk.mp3 --minutes 0  # your own file

Prints the real-time factor, arrival-to-words latency, peak and sampled resident memory (which must stay
flat: the file is read in blocks and the stream resets at endpoints) and, for the synthesized audio, a
drift check: the audio is one pattern (sentences and pauses, a whole number of encoder chunks) repeated,
so every repetition must give the same finals at the same offsets, early and late.
"""

import os
import resource
import sys
import tempfile
import time

import numpy as np
from absl import flags as absl_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cli import flags  # noqa: E402
from cli.common import model_path, run  # noqa: E402
from rnnt.audio import SAMPLE_RATE  # noqa: E402
from rnnt.config import DecodingConfig, EndpointConfig, SourceConfig  # noqa: E402

absl_flags.DEFINE_string("path", "", "audio file to stream; empty = synthesize --minutes of espeak-ng speech "
                         "and pauses")
absl_flags.DEFINE_float("minutes", 60.0, "minutes of synthesized audio (ignored with --path)")
absl_flags.DEFINE_string("keep", "", "keep the synthesized audio at this path (FLAC) instead of a temporary file")
flags.define(DecodingConfig, EndpointConfig, extra=("model", "backend", "threads"))
flags.define(SourceConfig, only=("block_seconds",))

SENTENCES = ("the cat sat on the mat", "open the door please", "read the book again", "where is the station")


def rss_mb() -> float:
    """Current resident memory in MB (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def synthesize(path: str, minutes: float, chunk_samples: int) -> float:
    """Write ``minutes`` of a repeated pattern (each sentence, then 2.5 s of silence) as FLAC in constant
    memory; return the pattern's period in seconds."""
    import subprocess

    import soundfile as sf

    from rnnt.audio import float32_to_int16, load_audio

    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, s in enumerate(SENTENCES):
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", f"{tmp}/{i}.wav", s], check=True)
            parts += [np.zeros(SAMPLE_RATE // 2, np.float32), load_audio(f"{tmp}/{i}.wav"),
                      np.zeros(SAMPLE_RATE * 2, np.float32)]
    pattern = np.concatenate(parts)
    pattern = np.pad(pattern, (0, -len(pattern) % chunk_samples))  # whole encoder chunks: same phase every time
    reps = max(1, int(minutes * 60 * SAMPLE_RATE / len(pattern)))
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, "PCM_16", format="FLAC") as f:
        for _ in range(reps):
            f.write(float32_to_int16(pattern))
    return len(pattern) / SAMPLE_RATE


class Collector:
    """Counts events, samples memory, and keeps each repetition's finals (text, offset) when periodic."""

    def __init__(self, period: float) -> None:
        self.period, self.finals, self.partials = period, 0, 0
        self.reps: dict[int, list] = {}
        self.memory: list[tuple[float, float]] = []  # (seconds of audio, RSS MB)
        self._next_sample = 0.0

    def __call__(self, ev) -> None:
        u = ev.utterance
        if ev.kind == "partial":
            self.partials += 1
        else:
            self.finals += 1
            if self.period and u.words:
                k = int((u.words[0].start + 1e-6) // self.period)
                self.reps.setdefault(k, []).append((u.text, round(u.words[0].start - k * self.period, 3)))
        if u.end >= self._next_sample:
            self.memory.append((u.end, rss_mb()))
            self._next_sample = u.end + 300

    def drift(self) -> str:
        if not self.period:
            return "n/a (not synthesized)"
        keys = sorted(self.reps)[1:-1]  # the first meets a fresh state; the last may be cut off
        if len(keys) < 2:
            return "n/a (too short)"
        differ = [k for k in keys if self.reps[k] != self.reps[keys[0]]]
        return (f"none: {len(keys)} repetitions gave identical finals {self.reps[keys[0]]}" if not differ else
                f"DRIFT: {len(differ)} of {len(keys)} repetitions differ from the first, e.g. #{differ[0]} "
                f"{self.reps[differ[0]]} vs {self.reps[keys[0]]}")


def main(argv: list[str]) -> int:
    from rnnt import live
    from rnnt.inference import load_recognizer
    from rnnt.sources import FileSource

    F = flags.FLAGS
    base = rss_mb()
    rec = load_recognizer(model_path(F.model, F.backend), F.backend, F.threads,
                          flags.config_from_flags(DecodingConfig), flags.config_from_flags(EndpointConfig))
    loaded = rss_mb()
    chunk = rec.decoding.chunk_frames * rec.backend.model_config.stack * rec.backend.feature_config.hop_length
    with tempfile.TemporaryDirectory() as tmp:
        path, period = F.path, 0.0
        if not path:
            path = F.keep or os.path.join(tmp, "hour.flac")
            t0 = time.time()
            period = synthesize(path, F.minutes, chunk)
            print(f"synthesized {F.minutes:g} min ({period:.2f} s pattern) in {time.time() - t0:.0f} s: {path}")
        collect = Collector(period)
        cfg = flags.config_from_flags(SourceConfig)
        report = live.run(rec, FileSource(path, cfg.block_seconds), cfg, collect)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(report.summary())
    print(f"audio {report.audio_seconds / 60:.1f} min, wall {report.wall_seconds:.0f} s "
          f"({report.audio_seconds / max(report.wall_seconds, 1e-9):.0f}x real time), RTF {report.rtf:.4f}, "
          f"{collect.finals} finals, {collect.partials} partials")
    print(f"memory: {base:.0f} MB at start, {loaded:.0f} MB with the model, peak {peak:.0f} MB; while streaming "
          + ", ".join(f"{t / 60:.0f} min {m:.0f} MB" for t, m in collect.memory))
    print(f"drift: {collect.drift()}")
    return 0


if __name__ == "__main__":
    run(main)
