"""Tests for rnnt/augment.py: shapes, purity, determinism, SNR, channel effects and speed."""

import dataclasses
import time

import numpy as np
import pytest
from scipy import signal

from rnnt.augment import Augmenter, coloured_noise, mix_at_snr, power, room_impulse_response, speed_perturb
from rnnt.audio import SAMPLE_RATE
from rnnt.config import AugmentConfig

OFF = AugmentConfig(speed_perturb=0.0, noise_prob=0.0, reverb_prob=0.0, bandlimit_prob=0.0, gain_db=0.0,
                    clip_prob=0.0)


def speech_like(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """Harmonic bursts with pauses, roughly speech-shaped, peak 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    x = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SAMPLE_RATE) / k for k in range(1, 12))
    x *= (np.sin(2 * np.pi * 2.5 * t) > -0.3) + 0.01 * rng.standard_normal(len(t))
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def test_off_is_identity_copy():
    x = speech_like()
    y = Augmenter(OFF, seed=1)(x)
    assert y is not x and np.array_equal(x, y)


def test_output_shape_dtype_finite_and_input_untouched():
    x = speech_like()
    before = x.copy()
    cfg = AugmentConfig(noise_prob=1.0, reverb_prob=1.0, bandlimit_prob=1.0, clip_prob=1.0)
    aug = Augmenter(cfg, seed=2)
    for _ in range(20):
        y = aug(x)
        assert y.dtype == np.float32 and y.ndim == 1
        assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0 + 1e-6
        assert 0.85 * len(x) <= len(y) <= 1.15 * len(x)
    assert np.array_equal(x, before)


def test_deterministic_with_seed_and_seeds_differ():
    inputs = [speech_like(2.0, seed=s) for s in range(6)]
    a, b, c = (Augmenter(AugmentConfig(noise_prob=1.0), seed=s) for s in (7, 7, 8))
    out_a, out_b, out_c = ([aug(x) for x in inputs] for aug in (a, b, c))
    assert all(np.array_equal(p, q) for p, q in zip(out_a, out_b))
    assert not all(p.shape == q.shape and np.allclose(p, q) for p, q in zip(out_a, out_c))


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_snr_is_right(snr):
    cfg = dataclasses.replace(OFF, noise_prob=1.0, snr_min=snr, snr_max=snr)
    aug = Augmenter(cfg, seed=3)
    for seed in range(8):
        x = 0.1 * speech_like(2.0, seed=seed)  # quiet enough that no peak limiting follows
        y = aug(x)
        measured = 10 * np.log10(power(x) / power(y - x))
        assert abs(measured - snr) < 0.1


def test_babble_is_built_from_remembered_utterances():
    aug = Augmenter(OFF, seed=4)
    for s in range(5):
        aug(speech_like(1.0, seed=s))
    assert len(aug.ring) == 5
    kinds = [aug.noise(8000) for _ in range(40)]
    assert all(k.shape == (8000,) and np.all(np.isfinite(k)) for k in kinds)


def test_speed_perturb_changes_length():
    x = speech_like(1.0)
    assert len(speed_perturb(x, 1.1)) == pytest.approx(len(x) / 1.1, abs=2)
    assert len(speed_perturb(x, 0.9)) == pytest.approx(len(x) / 0.9, abs=2)
    assert np.array_equal(speed_perturb(x, 1.0), x)


def test_coloured_noise_slopes():
    rng = np.random.default_rng(0)
    for exponent in (0.0, 1.0, 2.0):
        n = coloured_noise(rng, 1 << 16, exponent)
        f, p = signal.welch(n, fs=SAMPLE_RATE, nperseg=1024)
        low, high = p[(f > 100) & (f < 200)].mean(), p[(f > 3200) & (f < 6400)].mean()
        slope = np.log10(low / high) / np.log10(32)  # 1/f**e -> e decades per decade
        assert abs(slope - exponent) < 0.35
        assert power(n) == pytest.approx(1.0, rel=1e-3)


def test_room_impulse_response_decays():
    rng = np.random.default_rng(0)
    h = room_impulse_response(rng, 0.5)
    assert len(h) == SAMPLE_RATE // 2 and h[0] == 1.0
    early, late = power(h[800:2400]), power(h[6400:8000])
    assert late < early


def test_reverb_keeps_length_and_level():
    aug = Augmenter(OFF, seed=5)
    x = speech_like(2.0)
    y = aug.reverberate(x)
    assert y.shape == x.shape and power(y) == pytest.approx(power(x), rel=1e-3)


def test_telephone_removes_high_band():
    aug = Augmenter(OFF, seed=6)
    x = np.random.default_rng(0).standard_normal(SAMPLE_RATE * 2).astype(np.float32) * 0.1
    y = aug.telephone(x)
    f, p = signal.welch(y, fs=SAMPLE_RATE, nperseg=1024)
    assert y.shape == x.shape
    assert p[f > 4500].mean() < 1e-3 * p[(f > 500) & (f < 3000)].mean()
    assert p[f < 100].mean() < 0.1 * p[(f > 500) & (f < 3000)].mean()


def test_mix_at_snr_silent_noise_is_noop():
    x = speech_like(0.5)
    assert np.array_equal(mix_at_snr(x, np.zeros_like(x), 10.0), x)


def test_fast_enough():
    aug = Augmenter(AugmentConfig(), seed=9)
    x = speech_like(4.0)
    for _ in range(5):
        aug(x)
    start = time.perf_counter()
    for _ in range(50):
        aug(x)
    per_call = (time.perf_counter() - start) / 50
    assert per_call < 0.03  # about 3 ms on an idle core; the target is well under 10 ms
