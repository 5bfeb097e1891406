"""On-the-fly waveform augmentation for the training data loader (numpy and scipy only).

Legend: N input samples, N' output samples (N' != N only after speed perturbation), all mono float32 at
16 kHz (``audio.SAMPLE_RATE``).

One ``Augmenter`` per data-loader worker: it owns its ``np.random.Generator`` (give each worker its own
seed), a bank of coloured-noise buffers and a small ring of recently seen utterances from which babble
is mixed. The chain, each step drawn independently with the probabilities of ``AugmentConfig``:

speed (resampling) -> reverberation (synthetic room impulse response) -> additive noise (white, pink,
brown or babble at a random SNR) -> telephone channel (300-3400 Hz at 8 kHz, mu-law) -> gain -> clipping.

VTLP and SpecAugment work on features and live in the trainer, not here.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from scipy import fft as sp_fft
from scipy import signal

from rnnt.audio import SAMPLE_RATE
from rnnt.config import AugmentConfig

_NOISE_SECONDS = 8  # length of each pre-generated coloured-noise buffer
_SPEED_STEPS = 50  # speed factors are multiples of 1/_SPEED_STEPS (keeps resampling filters short)
_BABBLE_RING = 24  # utterances remembered for babble
_BABBLE_MAX_SECONDS = 8.0  # longest remembered excerpt


def coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """(n,) float32 unit-power noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown)."""
    spec = sp_fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spec), dtype=np.float64)
    freqs[0] = 1.0
    spec *= freqs ** (-exponent / 2)
    spec[0] = 0.0
    x = sp_fft.irfft(spec, n)
    return (x / (np.sqrt(np.mean(x * x)) + 1e-12)).astype(np.float32)


def room_impulse_response(rng: np.random.Generator, rt60: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(L,) float32 synthetic RIR: a direct path, sparse early reflections and an exponentially decaying
    noise tail that falls 60 dB in ``rt60`` seconds. L = rt60 * sample_rate (at least 10 ms)."""
    n = max(int(rt60 * sample_rate), sample_rate // 100)
    t = np.arange(n, dtype=np.float32) / sample_rate
    tail = rng.standard_normal(n).astype(np.float32) * np.exp(-6.908 * t / rt60).astype(np.float32)
    onset = int(rng.uniform(0.002, 0.01) * sample_rate)  # reverberation starts after the direct path
    tail[:onset] = 0.0
    for _ in range(int(rng.integers(3, 9))):  # early reflections
        k = int(rng.uniform(0.002, 0.05) * sample_rate)
        if k < n:
            tail[k] += rng.uniform(-0.6, 0.6)
    tail *= 10 ** (-rng.uniform(-3, 12) / 20) / (np.sqrt(np.sum(tail * tail)) + 1e-12)  # direct-to-reverb ratio
    tail[0] = 1.0
    return tail


def fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(N,), (L,) -> (N,): linear convolution of x with h, truncated to len(x)."""
    n = sp_fft.next_fast_len(len(x) + len(h) - 1, real=True)
    y = sp_fft.irfft(sp_fft.rfft(x, n) * sp_fft.rfft(h, n), n)
    return y[: len(x)].astype(np.float32)


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """(N,) -> (~N / factor,): play ``factor`` times faster (pitch moves with it), by polyphase resampling."""
    down = int(round(factor * _SPEED_STEPS))
    if down == _SPEED_STEPS:
        return x.copy()
    g = math.gcd(_SPEED_STEPS, down)
    return signal.resample_poly(x, _SPEED_STEPS // g, down // g).astype(np.float32)


def power(x: np.ndarray) -> float:
    """Mean power of (N,)."""
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """(N,) + (N,) scaled so that 10 log10(P_x / P_noise) = ``snr_db``."""
    p_noise = power(noise)
    if p_noise <= 0:
        return x.copy()
    scale = math.sqrt(power(x) / (p_noise * 10 ** (snr_db / 10)))
    return (x + scale * noise).astype(np.float32)


class Augmenter:
    """Random waveform augmentation: ``Augmenter(cfg, seed)(samples) -> samples`` (input never modified)."""

    def __init__(self, cfg: AugmentConfig, seed: int, sample_rate: int = SAMPLE_RATE):
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.rng = np.random.default_rng(seed)
        n = _NOISE_SECONDS * sample_rate
        self.noise_bank = {name: coloured_noise(self.rng, n, e) for name, e in (("pink", 1.0), ("brown", 2.0))}
        self.ring: deque[np.ndarray] = deque(maxlen=_BABBLE_RING)
        nyq = 4000.0
        self.phone_sos = signal.butter(4, [300 / nyq, 3400 / nyq], btype="bandpass", output="sos")

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """(N,) float32 -> (N',) float32, a new array."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"Augmenter expects mono (N,) samples, got shape {x.shape}")
        if len(x) == 0:
            return x.copy()
        y = self._augment(x)
        self._remember(x)  # after use, so babble never contains the utterance itself
        return y

    def _augment(self, x: np.ndarray) -> np.ndarray:
        """(N,) -> (N',): speed, reverb, noise, telephone, gain, clipping (each drawn)."""
        cfg, rng = self.cfg, self.rng
        if cfg.speed_perturb > 0:
            x = speed_perturb(x, rng.uniform(1 - cfg.speed_perturb, 1 + cfg.speed_perturb))
        else:
            x = x.copy()
        if rng.random() < cfg.reverb_prob:
            x = self.reverberate(x)
        if rng.random() < cfg.noise_prob:
            x = mix_at_snr(x, self.noise(len(x)), rng.uniform(cfg.snr_min, cfg.snr_max))
        if rng.random() < cfg.bandlimit_prob:
            x = self.telephone(x)
        x *= np.float32(10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20))
        if rng.random() < cfg.clip_prob:
            limit = float(np.max(np.abs(x))) * rng.uniform(0.15, 0.6)
            np.clip(x, -limit, limit, out=x)
        peak = float(np.max(np.abs(x)))
        if peak > 1.0:
            x *= np.float32(rng.uniform(0.7, 1.0) / peak)
        return x

    def _remember(self, x: np.ndarray) -> None:
        """Keep a random excerpt of every input (a copy) for babble."""
        keep = int(_BABBLE_MAX_SECONDS * self.sample_rate)
        if len(x) < self.sample_rate // 4:
            return
        start = int(self.rng.integers(0, max(1, len(x) - keep + 1)))
        clip = x[start: start + keep]
        rms = math.sqrt(power(clip))
        if rms > 0:
            self.ring.append((clip / rms).astype(np.float32))

    def _crop(self, buf: np.ndarray, n: int) -> np.ndarray:
        """(n,) from ``buf`` at a random offset, tiled when shorter, random sign."""
        if len(buf) < n:
            buf = np.tile(buf, n // len(buf) + 1)
        start = int(self.rng.integers(0, len(buf) - n + 1))
        out = buf[start: start + n]
        return -out if self.rng.random() < 0.5 else out.copy()

    def noise(self, n: int) -> np.ndarray:
        """(n,) noise of a random kind: white, pink, brown, or babble of 3-7 remembered utterances."""
        kind = self.rng.choice(["white", "pink", "brown", "babble"], p=[0.25, 0.25, 0.2, 0.3])
        if kind == "babble" and len(self.ring) >= 3:
            talkers = self.rng.choice(len(self.ring), size=min(len(self.ring), int(self.rng.integers(3, 8))),
                                      replace=False)
            return np.sum([self._crop(self.ring[int(i)], n) for i in talkers], axis=0).astype(np.float32)
        if kind == "white":
            return self.rng.standard_normal(n, dtype=np.float32)
        return self._crop(self.noise_bank["brown" if kind == "brown" else "pink"], n)

    def reverberate(self, x: np.ndarray) -> np.ndarray:
        """(N,) -> (N,) convolved with a random RIR (RT60 0.1-0.8 s), at the input's RMS level."""
        h = room_impulse_response(self.rng, self.rng.uniform(0.1, 0.8), self.sample_rate)
        y = fft_convolve(x, h)
        p_x, p_y = power(x), power(y)
        return y * np.float32(math.sqrt(p_x / p_y)) if p_y > 0 else y

    def telephone(self, x: np.ndarray) -> np.ndarray:
        """(N,) -> (N,): down to 8 kHz, 300-3400 Hz band-pass, 8-bit mu-law, back up to the input rate."""
        up, down = 8000, self.sample_rate
        g = math.gcd(up, down)
        y = signal.resample_poly(x, up // g, down // g)
        y = signal.sosfilt(self.phone_sos, y)
        peak = float(np.max(np.abs(y))) or 1.0
        mu = 255.0
        c = np.sign(y) * np.log1p(mu * np.abs(y / peak)) / np.log1p(mu)  # compand, quantize, expand
        c = np.round(c * 127) / 127
        y = peak * np.sign(c) * np.expm1(np.abs(c) * np.log1p(mu)) / mu
        z = signal.resample_poly(y, down // g, up // g)[: len(x)]
        return np.pad(z, (0, len(x) - len(z))).astype(np.float32)
