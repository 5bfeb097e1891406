"""Log-mel features: the same maths in numpy (inference, torch-free) and in torch (training batches).

Legend: N samples, T_in feature frames, F mel bins, B batch.

Frame ``i`` covers samples ``[i * hop, i * hop + win)`` (no centring, no padding), so a stream cut
anywhere yields exactly the frames of the whole signal. ``StreamingFeatures`` keeps the leftover samples
between calls. No dither at inference.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from rnnt.config import FeatureConfig

if TYPE_CHECKING:
    import torch


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """Triangular HTK-mel filters, (n_fft // 2 + 1, F) float64."""
    n_bins = cfg.n_fft // 2 + 1
    fft_hz = np.linspace(0.0, cfg.sample_rate / 2, n_bins)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.float64(cfg.f_min)), _hz_to_mel(np.float64(cfg.f_max)), cfg.n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (fft_hz[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - fft_hz[:, None]) / (upper - centre)[None, :]
    fb = np.maximum(0.0, np.minimum(rising, falling))
    fb.setflags(write=False)
    return fb


@functools.lru_cache(maxsize=8)
def _window(win_length: int) -> np.ndarray:
    w = np.hanning(win_length + 1)[:-1]  # periodic Hann
    w.setflags(write=False)
    return w


def num_frames(num_samples: int, cfg: FeatureConfig) -> int:
    """Feature frames produced by ``num_samples`` samples."""
    if num_samples < cfg.win_length:
        return 0
    return (num_samples - cfg.win_length) // cfg.hop_length + 1


def log_mel_np(samples: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(N,) float samples -> (T_in, F) float32 log-mel; numpy only."""
    n = num_frames(len(samples), cfg)
    if n == 0:
        return np.zeros((0, cfg.n_mels), dtype=np.float32)
    x = np.asarray(samples, dtype=np.float64)
    idx = np.arange(cfg.win_length)[None, :] + cfg.hop_length * np.arange(n)[:, None]  # (T_in, win)
    frames = x[idx] * _window(cfg.win_length)[None, :]
    power = np.abs(np.fft.rfft(frames, n=cfg.n_fft, axis=1)) ** 2  # (T_in, n_fft//2+1)
    mel = power @ mel_filterbank(cfg)  # (T_in, F)
    return np.log(np.maximum(mel, cfg.log_floor)).astype(np.float32)


def log_mel(samples: "torch.Tensor", cfg: FeatureConfig) -> "torch.Tensor":
    """(N,) or (B, N) float tensor -> (T_in, F) or (B, T_in, F) float32 log-mel, in torch.

    Equal to ``log_mel_np`` within float32 rounding; used for training batches.
    """
    import torch

    x = samples.to(torch.float32)
    squeeze = x.dim() == 1
    if squeeze:
        x = x[None]
    n = num_frames(x.shape[-1], cfg)
    if n == 0:
        out = x.new_zeros(x.shape[0], 0, cfg.n_mels)
        return out[0] if squeeze else out
    frames = x.unfold(-1, cfg.win_length, cfg.hop_length)  # (B, T_in, win)
    window = torch.from_numpy(_window(cfg.win_length).astype(np.float32)).to(x.device)
    spec = torch.fft.rfft(frames * window, n=cfg.n_fft, dim=-1)  # (B, T_in, n_fft//2+1)
    power = spec.real.square() + spec.imag.square()
    fb = torch.from_numpy(mel_filterbank(cfg).astype(np.float32)).to(x.device)
    out = torch.log(torch.clamp(power @ fb, min=cfg.log_floor))  # (B, T_in, F)
    return out[0] if squeeze else out


class StreamingFeatures:
    """Incremental ``log_mel_np``: chunks in, frames out, identical to one call on the whole signal.

    Keeps only the samples that the next frame still needs, so memory is constant.
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self._pending = np.zeros(0, dtype=np.float32)
        self.frames_emitted = 0

    def accept(self, samples: np.ndarray) -> np.ndarray:
        """Append (N,) samples; return the (T_new, F) frames now complete."""
        buf = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32).reshape(-1)])
        n = num_frames(len(buf), self.cfg)
        frames = log_mel_np(buf[: (n - 1) * self.cfg.hop_length + self.cfg.win_length] if n else buf[:0], self.cfg)
        self._pending = buf[n * self.cfg.hop_length:]
        self.frames_emitted += n
        return frames

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)
        self.frames_emitted = 0
