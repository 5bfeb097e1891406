import numpy as np
import pytest
import torch

from rnnt.config import FeatureConfig
from rnnt.features import StreamingFeatures, log_mel, log_mel_np, num_frames

CFG = FeatureConfig()


def _signal(rng, seconds=2.0):
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def test_shape_and_frame_count(rng):
    x = _signal(rng, 1.0)
    f = log_mel_np(x, CFG)
    assert f.shape == (num_frames(len(x), CFG), CFG.n_mels) == (98, 80)
    assert f.dtype == np.float32 and np.all(np.isfinite(f))
    assert log_mel_np(x[:100], CFG).shape == (0, 80)


def test_torch_matches_numpy(rng):
    x = _signal(rng)
    a = log_mel_np(x, CFG)
    b = log_mel(torch.from_numpy(x), CFG).numpy()
    assert np.abs(a - b).max() <= 1e-3
    batch = log_mel(torch.from_numpy(np.stack([x, x[::-1].copy()])), CFG)
    assert batch.shape == (2,) + a.shape
    assert np.abs(batch[0].numpy() - a).max() <= 1e-3


@pytest.mark.parametrize("chunk", [1, 160, 1000, 16000, 7919])
def test_streaming_equals_offline(rng, chunk):
    x = _signal(rng, 3.0)
    offline = log_mel_np(x, CFG)
    sf = StreamingFeatures(CFG)
    parts = [sf.accept(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    streamed = np.concatenate(parts)
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() <= 1e-4


def test_pure_functions_do_not_mutate(rng):
    x = _signal(rng, 0.5)
    before = x.copy()
    log_mel_np(x, CFG)
    log_mel(torch.from_numpy(x), CFG)
    assert np.array_equal(x, before)


def test_loudness_shifts_log_energy(rng):
    x = _signal(rng, 0.5)
    diff = log_mel_np(2 * x, CFG) - log_mel_np(x, CFG)
    assert np.allclose(diff, np.log(4.0), atol=1e-3)
