"""Manifests, the training dataset, collate and duration-bucketed batching.

Legend: B batch, N samples, T_in feature frames, F mel bins, U targets.

Manifest: JSON lines ``{"audio": path relative to the manifest or absolute, "text": "...",
"duration": seconds (optional)}``. Bad lines are skipped and counted, never fatal.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Callable, Iterator

import numpy as np
import torch

from rnnt.audio import SAMPLE_RATE, load_audio
from rnnt.config import FeatureConfig
from rnnt.errors import DataError, RnntError
from rnnt.features import log_mel
from rnnt.manifest import Entry, ManifestReport, read_manifest, read_manifests, write_manifest  # noqa: F401
from rnnt.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class SpeechDataset(torch.utils.data.Dataset):
    """Item ``i`` -> dict(feats (T_in, F), tokens (U,)) or None when the audio is unreadable.

    ``augment`` maps a waveform to a waveform (training only); features are computed here, in the
    loader worker.
    """

    def __init__(self, entries: list[Entry], tokenizer: Tokenizer, feature_cfg: FeatureConfig,
                 augment: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.entries = entries
        self.tokenizer = tokenizer
        self.feature_cfg = feature_cfg
        self.augment = augment
        self._tokens = [None] * len(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict | None:
        e = self.entries[i]
        try:
            samples = load_audio(e.audio)
        except RnntError as err:
            log.warning("skipping unreadable audio: %s", err)
            return None
        if len(samples) < self.feature_cfg.win_length:
            log.warning("skipping too-short audio: %s", e.audio)
            return None
        if self.augment is not None:
            samples = self.augment(samples)
        feats = log_mel(torch.from_numpy(np.ascontiguousarray(samples)), self.feature_cfg)
        tokens = torch.tensor(self.tokenizer.encode(e.text), dtype=torch.long)
        return {"feats": feats, "tokens": tokens, "index": i}


def collate(items: list[dict | None]) -> dict:
    """Pad a list of items into a batch; unreadable items (None) are dropped and counted.

    Returns feats (B, T_in, F), feat_lengths (B,), tokens (B, U), token_lengths (B,), skipped int.
    """
    good = [x for x in items if x is not None]
    skipped = len(items) - len(good)
    if not good:
        return {"feats": None, "skipped": skipped}
    feats = torch.nn.utils.rnn.pad_sequence([x["feats"] for x in good], batch_first=True)
    tokens = torch.nn.utils.rnn.pad_sequence([x["tokens"] for x in good], batch_first=True)
    return {
        "feats": feats, "feat_lengths": torch.tensor([len(x["feats"]) for x in good]),
        "tokens": tokens, "token_lengths": torch.tensor([len(x["tokens"]) for x in good]),
        "indices": [x["index"] for x in good], "skipped": skipped,
    }


def make_batches(durations: list[float], batch_size: int, max_batch_seconds: float, seed: int,
                 bucket_size: int = 100) -> list[list[int]]:
    """Duration-bucketed batches for one epoch, deterministic in ``seed``.

    Shuffle, sort within windows of ``bucket_size * batch_size`` items by duration, cut into batches
    of at most ``batch_size`` items and ``max_batch_seconds`` seconds (if > 0), shuffle batch order.
    """
    rng = random.Random(seed)
    order = list(range(len(durations)))
    rng.shuffle(order)
    window = max(1, bucket_size * batch_size)
    batches: list[list[int]] = []
    for w in range(0, len(order), window):
        part = sorted(order[w : w + window], key=lambda i: durations[i])
        cur: list[int] = []
        for i in part:
            longest = max([durations[j] for j in cur] + [durations[i]])
            if cur and (len(cur) >= batch_size or (max_batch_seconds > 0 and longest * (len(cur) + 1) > max_batch_seconds)):
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
    rng.shuffle(batches)
    return batches


def shard_batches(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """Rank ``rank``'s share: every world_size-th batch, truncated so every rank has the same count."""
    usable = len(batches) // world_size * world_size
    return batches[:usable][rank::world_size]


class EpochBatches(torch.utils.data.Sampler):
    """Batch sampler over one epoch's (sharded) batches, starting at ``start`` (for resume)."""

    def __init__(self, batches: list[list[int]], start: int = 0) -> None:
        self.batches = batches
        self.start = start

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches[self.start:])

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.start)


def feature_stats(dataset: SpeechDataset, max_items: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Global per-bin mean and std of log-mel features over up to ``max_items`` items (no augmentation)."""
    total, total_sq, count = None, None, 0
    step = max(1, len(dataset) // max_items)
    for i in range(0, len(dataset), step):
        item = dataset[i]
        if item is None:
            continue
        f = item["feats"].double()
        total = f.sum(0) if total is None else total + f.sum(0)
        total_sq = f.square().sum(0) if total_sq is None else total_sq + f.square().sum(0)
        count += f.shape[0]
        if i // step >= max_items:
            break
    if not count:
        raise DataError("no readable audio to compute feature statistics from")
    mean = total / count
    std = torch.sqrt(torch.clamp(total_sq / count - mean.square(), min=1e-4))
    return mean.float(), std.float()


def estimate_seconds(entries: list[Entry]) -> float:
    known = [e.duration for e in entries if e.duration > 0]
    return sum(known) + (len(entries) - len(known)) * (np.mean(known) if known else 5.0)


def frames_for(seconds: float, cfg: FeatureConfig) -> int:
    return max(0, math.floor((seconds * SAMPLE_RATE - cfg.win_length) / cfg.hop_length) + 1)
