"""Audio constants and loading: everything becomes mono float32 in [-1, 1] at 16 kHz.

Only numpy is needed here (scipy for resampling in memory, ffmpeg for formats soundfile cannot read),
so the onnxruntime path can use this module without torch.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from fractions import Fraction

import numpy as np

from rnnt.errors import AudioError

SAMPLE_RATE = 16000  # every model input is at this rate
INT16_SCALE = 32768.0  # int16 PCM -> float32 divisor (the only sample scale in the project)


def int16_to_float32(pcm: np.ndarray | bytes) -> np.ndarray:
    """int16 PCM (array or raw little-endian bytes) -> float32 in [-1, 1)."""
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        pcm = np.frombuffer(pcm, dtype="<i2")
    return pcm.astype(np.float32) / INT16_SCALE


def float32_to_int16(samples: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> int16 PCM (clipped)."""
    return np.clip(np.round(samples * INT16_SCALE), -32768, 32767).astype(np.int16)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) -> (N,) by averaging channels."""
    if samples.ndim == 2:
        return samples.mean(axis=1).astype(np.float32)
    return samples.astype(np.float32, copy=False)


def resample(samples: np.ndarray, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited polyphase resampling of a mono float32 signal."""
    if orig_rate == new_rate:
        return samples.astype(np.float32, copy=False)
    if orig_rate <= 0:
        raise AudioError(f"invalid sample rate {orig_rate} Hz; it must be positive")
    from scipy.signal import resample_poly

    ratio = Fraction(new_rate, orig_rate).limit_denominator(1000)
    return resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)


def ffmpeg_binary() -> str:
    """Path of ffmpeg, or an AudioError with the install hint."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise AudioError("ffmpeg was not found on PATH; install it (Debian: apt-get install ffmpeg)")
    return path


def _load_ffmpeg(path: str, sample_rate: int) -> np.ndarray:
    cmd = [ffmpeg_binary(), "-nostdin", "-v", "error", "-i", path, "-f", "s16le", "-ac", "1",
           "-ar", str(sample_rate), "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"cannot decode {path}: {msg[-1] if msg else 'ffmpeg failed'}")
    return int16_to_float32(proc.stdout)


def load_audio(path: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any audio file as (N,) mono float32 in [-1, 1] at ``sample_rate``.

    WAV/FLAC/OGG go through soundfile; anything else (MP3, AAC, video) through ffmpeg.
    """
    if not os.path.isfile(path):
        raise AudioError(f"audio file not found: {path}")
    if os.path.getsize(path) == 0:
        raise AudioError(f"audio file is empty: {path}")
    try:
        import soundfile as sf

        data, rate = sf.read(path, dtype="float32", always_2d=False)
    except Exception:  # soundfile cannot read this format: let ffmpeg try
        return _load_ffmpeg(path, sample_rate)
    samples = resample(to_mono(np.asarray(data)), int(rate), sample_rate)
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"audio file holds non-finite samples: {path}")
    return samples


def duration_seconds(path: str) -> float:
    """Duration of an audio file in seconds (header only when soundfile can read it)."""
    try:
        import soundfile as sf

        info = sf.info(path)
        return info.frames / float(info.samplerate)
    except Exception:
        return len(load_audio(path)) / SAMPLE_RATE


def write_wav(path: str, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float32 samples as 16-bit PCM WAV."""
    import soundfile as sf

    sf.write(path, float32_to_int16(samples), sample_rate, subtype="PCM_16")


def rms_db(samples: np.ndarray) -> float:
    """Root-mean-square level in dBFS (-inf for silence)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return 20 * math.log10(rms) if rms > 0 else float("-inf")
