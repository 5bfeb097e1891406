"""Training: ``train(cfgs)`` runs the loop; ``lr_at`` is the pure schedule; ``train_step`` one update.

Legend: B batch, T_in feature frames, F mel bins, U targets.

Runs alone or under ``torchrun`` (DistributedDataParallel: gloo on CPU, nccl on CUDA with one process
per GPU, the GPU index taken from LOCAL_RANK):

* Rank 0 loads or trains the tokenizer and computes the feature statistics; the tokenizer and the
  initial weights reach the other ranks by broadcast, so every rank starts identical.
* Every rank cuts each epoch into the same batches and takes every world_size-th one
  (``shard_batches``): each reads its own shard, and all shards have the same length. A micro-batch
  whose audio is all unreadable still runs (a zero-weight stand-in), so every rank makes the same
  number of gradient all-reduces and optimizer steps. Time limits are agreed across ranks.
* Rank 0 alone writes checkpoints, ``train.log`` and the progress bar. Dev evaluation is shared out
  over the ranks and its counts summed.
* ``resume``: rank 0 picks the newest checkpoint and every rank loads that file, so ``exp_dir`` must be
  on a file system that every node sees (as the manifests and audio must be).

A checkpoint stores the optimizer, the fp16 grad scaler, the step, the world size and the data
position (epoch, batch), so ``resume`` continues exactly; with another world size it continues from the
same point of the epoch. One optimizer step sees ``batch_size * accum_steps * world_size`` utterances:
to keep that effective batch on fewer GPUs, raise ``accum_steps``.

Precision: ``bf16``/``fp16`` autocast on CUDA (fp16 with a ``GradScaler``); on the CPU ``bf16`` autocast or fp32.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import itertools
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable

import torch

from rnnt import checkpoint as ckpt_io
from rnnt.audio import load_audio
from rnnt.backend import TorchBackend
from rnnt.config import AllConfigs, AugmentConfig, DecodingConfig, TrainConfig
from rnnt.data import (Entry, EpochBatches, SpeechDataset, collate, feature_stats, make_batches, read_manifests,
                       shard_batches)
from rnnt.errors import ConfigError, DataError, RnntError
from rnnt.metrics import ErrorCounts, char_errors, word_errors
from rnnt.session import Recognizer
from rnnt.tokenizer import Tokenizer, train_bpe
from rnnt.transducer import Transducer, build_model, is_training_only

log = logging.getLogger("rnnt.train")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` over ``decay_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.decay_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------- distributed


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this module created the process group (and destroys it at the end)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process")
    owns = not dist.is_initialized()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if owns:  # 60 min: a rank may wait that long on rank 0's checkpoint write or a slow dev file
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=60))
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def teardown_distributed(dist: DistInfo, ok: bool) -> None:
    """After a clean finish wait for every rank; then leave the process group if we created it."""
    if not dist.enabled or not torch.distributed.is_initialized():
        return
    if ok:
        torch.distributed.barrier()
    if dist.owns_group:
        torch.distributed.destroy_process_group()


def pick_device(cfg: TrainConfig) -> torch.device:
    """CPU, or the CUDA GPU numbered LOCAL_RANK (one torchrun process per GPU)."""
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA GPU is visible; use --device=cpu")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) are visible; "
                              f"use torchrun --nproc_per_node {torch.cuda.device_count()} or fewer")
        return torch.device("cuda", local)
    return torch.device("cpu")


def _all_sum(values: list[float], dist: DistInfo, device: torch.device) -> list[float]:
    """Element-wise sum over ranks (the values themselves when not distributed)."""
    if not dist.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _from_rank0(obj: Any, dist: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable object)."""
    if not dist.enabled:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def check_in_sync(model: torch.nn.Module, dist: DistInfo, device: torch.device) -> float:
    """Compare every parameter's sum and sum of squares across ranks; returns the checksum.

    Raises RnntError naming the first parameter that differs (the ranks have diverged).
    """
    core = model.module if hasattr(model, "module") else model
    names, params = zip(*[(n, p.detach()) for n, p in core.named_parameters()])
    sums = torch.stack([p.double().sum() for p in params] + [p.double().square().sum() for p in params]).to(device)
    hi, lo = sums.clone(), sums.clone()
    torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
    torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
    if not torch.equal(hi, lo):
        bad = int(torch.nonzero(hi != lo)[0]) % len(params)
        raise RnntError(f"rank {dist.rank}: weights differ across the {dist.world_size} ranks (first: {names[bad]}); "
                        "data-parallel training has diverged")
    return float(sums[: len(params)].sum())


# ---------------------------------------------------------------------------------------------- one update


_EQ_TERMS = 4  # cosines in a random equalizer curve (4: up to about two peaks across the band)
_NATS_PER_DB = math.log(10) / 10  # a power ratio of 1 dB in natural-log units


def eq_curves(b: int, f: int, max_db: float, gen: torch.Generator) -> torch.Tensor:
    """(B, F) random smooth gain curves in natural-log power units, one per utterance, each with its peak
    absolute value drawn uniformly from [0, ``max_db``] dB. Higher cosines get smaller amplitudes (1/k)."""
    k = torch.arange(1, _EQ_TERMS + 1, dtype=torch.float32)  # (K,)
    basis = torch.cos(math.pi * k[:, None] * (torch.arange(f, dtype=torch.float32)[None, :] + 0.5) / f)  # (K, F)
    amp = (torch.rand(b, _EQ_TERMS, generator=gen) * 2 - 1) / k  # (B, K)
    curve = amp @ basis  # (B, F)
    peak = curve.abs().amax(dim=1, keepdim=True).clamp_min(1e-6)  # (B, 1)
    return curve / peak * (torch.rand(b, 1, generator=gen) * max_db * _NATS_PER_DB)


_ENVELOPE_CEPS = 12  # cepstral coefficients (DCT over the mel axis) that make a frame's spectral envelope


def warp_mel(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(B, T, F), (B,) -> (B, T, F): each utterance's mel axis stretched by ``alpha`` (bin k takes the value
    at k / alpha, linearly interpolated; bins past the top repeat the top bin)."""
    b, t_max, f = x.shape
    src = torch.clamp(torch.arange(f)[None, :].float() / alpha[:, None], max=f - 1)  # (B, F) source bins
    lo = src.floor().long()
    hi = torch.clamp(lo + 1, max=f - 1)
    w = (src - lo.float())[:, None, :].to(x.dtype)
    return torch.gather(x, 2, lo[:, None, :].expand(b, t_max, f)) * (1 - w) + \
        torch.gather(x, 2, hi[:, None, :].expand(b, t_max, f)) * w


@functools.lru_cache(maxsize=4)
def _envelope_projection(f: int, n_ceps: int) -> torch.Tensor:
    """(F, F): projects a log-mel frame onto its first ``n_ceps`` orthonormal DCT-II coefficients and back."""
    n = torch.arange(f, dtype=torch.float64)
    basis = torch.cos(math.pi * torch.arange(n_ceps, dtype=torch.float64)[:, None] * (n[None, :] + 0.5) / f)
    basis[0] /= math.sqrt(2)
    basis *= math.sqrt(2 / f)  # (K, F), orthonormal rows
    return (basis.T @ basis).float()


def formant_warp(x: torch.Tensor, alpha: torch.Tensor, n_ceps: int = _ENVELOPE_CEPS) -> torch.Tensor:
    """(B, T, F), (B,) -> (B, T, F): move the formants but not the pitch harmonics.

    Each frame splits into its spectral envelope (its first ``n_ceps`` cepstral coefficients: the vocal
    tract) and the rest (the harmonics' ripple of the voice source, noise). Only the envelope's mel axis is
    stretched by ``alpha``, so a voice gets another vocal-tract length at the same pitch; VTLP (``warp_mel``
    on the whole frame) moves both together."""
    env = x @ _envelope_projection(x.shape[2], n_ceps).to(x.dtype)  # (B, T, F)
    return warp_mel(env, alpha) + (x - env)


def tempo_warp(x: torch.Tensor, lengths: torch.Tensor, max_factor: float, stretch: int,
               gen: torch.Generator) -> torch.Tensor:
    """(B, T, F) -> (B, T, F): each utterance's own frames re-timed by a random, uneven tempo.

    The synthesizers speak at an even pace, and speed perturbation changes it only for a whole utterance;
    people hurry and linger within a sentence. Each stretch of ``stretch`` output frames gets a tempo drawn
    log-uniformly from [1/(1+``max_factor``), 1+``max_factor``] (source frames read per output frame), and
    the tempos are scaled so that the utterance keeps its length: the last output frame is the last input
    frame, so labels and lengths stay as they are. Frames between two source frames are interpolated
    linearly. Padding past ``lengths`` is left untouched."""
    out = x.clone()
    log_max = math.log1p(max_factor)
    for i in range(x.shape[0]):
        n = int(lengths[i])
        if n < 3:
            continue
        k = -(-n // stretch)
        tempo = torch.exp((torch.rand(k, generator=gen) * 2 - 1) * log_max)  # (K,)
        steps = tempo.repeat_interleave(stretch)[: n - 1].double()  # (n-1,) source frames per output frame
        src = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(steps, 0)])
        src = (src * ((n - 1) / src[-1])).clamp(0, n - 1)  # (n,) from 0 to n-1
        lo = src.floor().long().clamp(max=n - 2)
        w = (src - lo).to(x.dtype)[:, None]  # (n, 1) weight of the later source frame
        out[i, :n] = x[i, lo] * (1 - w) + x[i, lo + 1] * w
    return out


def spec_augment(feats: torch.Tensor, lengths: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """A random local tempo (``tempo_warp``), a random mel-axis warp (VTLP), a random formant shift at the
    same pitch, a random smooth equalizer, then frequency and time masks (filled with each row's mean).

    The equalizer adds to every frame of an utterance one curve over the mel axis, a sum of the first
    ``_EQ_TERMS`` cosines with random amplitudes, scaled so that its largest gain or cut is drawn from
    [0, ``spec_eq_db``] dB: a new spectral tilt and timbre per utterance, as a different voice, microphone
    or room colours the spectrum. It is constant in time, so the model learns to ignore it.

    feats (B, T_in, F) -> (B, T_in, F) log-mel (natural log of power); the input is not modified.
    """
    x = feats.clone()
    b, t_max, f = x.shape
    if cfg.tempo_warp > 0:
        x = tempo_warp(x, lengths, cfg.tempo_warp, cfg.tempo_frames, gen)
    if cfg.vtlp > 0:
        x = warp_mel(x, 1 + (torch.rand(b, generator=gen) * 2 - 1) * cfg.vtlp)
    if cfg.formant_warp > 0:
        x = formant_warp(x, 1 + (torch.rand(b, generator=gen) * 2 - 1) * cfg.formant_warp)
    if cfg.spec_eq_db > 0:
        x = x + eq_curves(b, f, cfg.spec_eq_db, gen).to(x.dtype)[:, None, :]
    fill = x.mean(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    for i in range(b):
        n = int(lengths[i])
        for _ in range(cfg.spec_freq_masks):
            width = int(torch.randint(0, cfg.spec_freq_width + 1, (1,), generator=gen))
            start = int(torch.randint(0, max(1, f - width), (1,), generator=gen))
            x[i, :, start : start + width] = fill[i]
        max_w = int(cfg.spec_time_width * n)
        for _ in range(cfg.spec_time_masks):
            width = int(torch.randint(0, max_w + 1, (1,), generator=gen))
            start = int(torch.randint(0, max(1, n - width), (1,), generator=gen))
            x[i, start : start + width, :] = fill[i]
    return x


def autocast_dtype(tc: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``tc.precision`` on ``device`` (None: plain fp32).

    On the CPU only bf16 applies (fp16 trains in fp32 there), and only where the CPU computes bf16 in
    hardware: the weights, Adam and the loss's lattice stay fp32/fp64, while the LSTM and linear layers run
    in bf16, about 2x faster on CPUs with AMX. Elsewhere bf16 is emulated and slower, or (AVX2-only CPUs)
    oneDNN has no bf16 LSTM at all, so such CPUs train in fp32."""
    if device.type == "cpu":
        return torch.bfloat16 if tc.precision == "bf16" and cpu_bf16_is_native() else None
    if device.type != "cuda":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.precision)


def cpu_bf16_is_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX or AVX-512 BF16); elsewhere bf16 is emulated, slower."""
    cpu = torch.cpu
    return any(getattr(cpu, name, lambda: False)() for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def _stand_in_batch(cfgs: AllConfigs) -> dict:
    """A silent one-token utterance, run with zero weight when a rank's micro-batch is all unreadable."""
    frames = 4 * cfgs.model.stack
    return {"feats": torch.zeros(1, frames, cfgs.model.n_mels), "feat_lengths": torch.tensor([frames]),
            "tokens": torch.ones(1, 1, dtype=torch.long), "token_lengths": torch.tensor([1])}


def train_step(model, optimizer, batches: list[dict], cfgs: AllConfigs, step: int, device: torch.device,
               gen: torch.Generator, scaler: torch.amp.GradScaler | None = None,
               dist: DistInfo | None = None) -> tuple[float, float]:
    """One optimizer update over ``accum_steps`` micro-batches.

    Under DDP gradients are all-reduced once, on the last micro-batch. A micro-batch without readable
    audio (``feats`` None) runs as a zero-weight stand-in. Returns (mean loss per utterance over all
    ranks, gradient norm after all-reduce).
    """
    tc, dist = cfgs.train, dist or DistInfo()
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, tc)
    amp = autocast_dtype(tc, device)
    prune_warmup = min(1.0, step / tc.prune_warmup_steps) if tc.prune_warmup_steps else 1.0
    total, count = 0.0, 0
    for k, batch in enumerate(batches):
        real = batch["feats"] is not None
        b = batch if real else _stand_in_batch(cfgs)
        feats = spec_augment(b["feats"], b["feat_lengths"], cfgs.augment, gen) if tc.augment and real else b["feats"]
        sync = k == len(batches) - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():
            with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                loss = model(feats.to(device, non_blocking=True), b["feat_lengths"].to(device),
                             b["tokens"].to(device, non_blocking=True), b["token_lengths"].to(device),
                             prune_warmup=prune_warmup)  # (B,)
            objective = loss.float().sum() * ((1.0 / len(loss)) if real else 0.0) / len(batches)
            (scaler.scale(objective) if scaler is not None else objective).backward()
        if real:
            total += float(loss.detach().float().sum())
            count += len(loss)
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad))
    if scaler is not None:  # skips the update itself when the gradient is not finite
        scaler.step(optimizer)
        scaler.update()
    elif math.isfinite(norm):
        optimizer.step()
    else:
        log.warning("step %d: non-finite gradient norm, update skipped", step)
    optimizer.zero_grad(set_to_none=True)
    total, count = _all_sum([total, count], dist, device)
    return total / max(1, count), norm


# ---------------------------------------------------------------------------------------------- setup


def _make_augmenter(cfgs: AllConfigs, seed: int):
    if not cfgs.train.augment:
        return None
    try:
        from rnnt.augment import Augmenter
    except ImportError:  # the augmentation module is optional for the tiny test setups
        return None
    return Augmenter(cfgs.augment, seed)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def prepare_tokenizer(cfgs: AllConfigs, texts: list[str], dist: DistInfo) -> Tokenizer:
    """Load ``train.tokenizer``, or the run's own ``exp_dir/tokenizer.model``, or train one on ``texts``.

    Only rank 0 reads or trains it; the other ranks receive its bytes.
    """
    proto = None
    if dist.is_main:
        if cfgs.train.tokenizer:
            proto = Tokenizer.load(cfgs.train.tokenizer).model_proto
        else:
            path = os.path.join(cfgs.train.exp_dir, "tokenizer.model")
            if not os.path.isfile(path):
                log.info("training a %d-piece BPE tokenizer on %d texts", cfgs.model.vocab_size, len(texts))
                train_bpe(texts, cfgs.model.vocab_size, path)
            proto = Tokenizer.load(path).model_proto
    return Tokenizer(_from_rank0(proto, dist))


def summed_loss(model: Transducer, items: Iterable[dict], device: torch.device, batch_size: int = 16,
                transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, int, int]:
    """Exact transducer loss of ``items`` (SpeechDataset items, read lazily in batches of ``batch_size``),
    summed: (loss, utterances, target tokens). ``transform`` maps each batch's features (B, T, F) first."""
    loss_sum, utterances, tokens = 0.0, 0, 0
    items = iter(items)
    with torch.inference_mode():
        while chunk := list(itertools.islice(items, batch_size)):
            batch = collate(chunk)
            if batch["feats"] is None:
                continue
            feats = transform(batch["feats"]) if transform else batch["feats"]
            loss = model(feats.to(device), batch["feat_lengths"].to(device), batch["tokens"].to(device),
                         batch["token_lengths"].to(device))
            loss_sum += float(loss.float().sum())
            utterances += len(loss)
            tokens += int(batch["token_lengths"].sum())
    return loss_sum, utterances, tokens


def evaluate(model: Transducer, dataset: SpeechDataset, cfgs: AllConfigs, max_utterances: int,
             device: torch.device, dist: DistInfo | None = None) -> dict:
    """Dev loss (per utterance) and greedy streaming WER/CER on up to ``max_utterances`` items.

    Under torchrun every rank must call it: each decodes every world_size-th item and the counts are summed.
    """
    dist = dist or DistInfo()
    model.eval()
    mine = list(range(dist.rank, min(len(dataset), max_utterances), dist.world_size))
    rec = Recognizer(TorchBackend(model, cfgs.features), dataset.tokenizer, DecodingConfig(beam=1, lm=""))
    loss_sum, loss_n, _ = summed_loss(model, (dataset[i] for i in mine), device)
    decoded, words, chars, example = 0, ErrorCounts(), ErrorCounts(), None
    with torch.inference_mode():
        for i in mine:
            e = dataset.entries[i]
            try:
                hyp = rec.transcribe(load_audio(e.audio))
            except (RnntError, RuntimeError, ValueError) as err:  # an unreadable dev file must not stop training
                log.warning("dev decode skipped %s: %s", e.audio, err)
                continue
            words, chars = words + word_errors(e.text, hyp), chars + char_errors(e.text, hyp)
            decoded += 1
            example = example or (e.text, hyp)
    model.train()
    w, c = words, chars
    t = _all_sum([loss_sum, loss_n, decoded, w.substitutions, w.deletions, w.insertions, w.reference_length,
                  c.substitutions, c.deletions, c.insertions, c.reference_length], dist, device)
    n = [int(round(x)) for x in t[1:]]
    return {"loss": t[0] / n[0] if n[0] else float("nan"), "wer": ErrorCounts(*n[2:6]).rate,
            "cer": ErrorCounts(*n[6:10]).rate, "utterances": n[1], "example": example}


class _RunLog:
    """Log lines to ``exp_dir/train.log`` and the logger; silent on every rank but 0."""

    def __init__(self, path: str | None, enabled: bool = True) -> None:
        self.enabled = enabled
        self._f = open(path, "a", encoding="utf-8") if path and enabled else None

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        log.info(msg)
        if self._f:
            self._f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f:
            self._f.close()


def _loader(dataset: SpeechDataset, batches: list[list[int]], start: int, workers: int, pin: bool = False):
    return torch.utils.data.DataLoader(dataset, batch_sampler=EpochBatches(batches, start), collate_fn=collate,
                                       num_workers=workers, worker_init_fn=_worker_init if workers else None,
                                       persistent_workers=False, prefetch_factor=4 if workers else None,
                                       pin_memory=pin)


@dataclass
class _Position:
    """Where training stands; all ranks hold the same values except ``skipped``."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of this epoch's shard already consumed
    skipped: int = 0  # unreadable audio files met by this rank


@dataclass
class _Run:
    """Everything the loop carries between steps."""

    cfgs: AllConfigs
    dist: DistInfo
    device: torch.device
    model: torch.nn.Module  # DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    tokenizer: Tokenizer
    dev_set: SpeechDataset | None
    say: _RunLog
    flagfile: str
    pos: _Position
    t0: float
    bar: Any = None
    last_loss: float = float("nan")
    last_token_loss: float = float("nan")  # the same, per target token
    last_eval: dict | None = None

    @property
    def core(self) -> Transducer:
        return self.model.module if hasattr(self.model, "module") else self.model


def _save(path: str, model, optimizer, cfgs: AllConfigs, tokenizer: Tokenizer, step: int, flagfile: str,
          extra: dict) -> None:
    core = model.module if hasattr(model, "module") else model
    ckpt_io.save(path, ckpt_io.Checkpoint(
        model_config=cfgs.model, feature_config=cfgs.features, tokenizer=tokenizer,
        state_dict=core.state_dict(), step=step, flagfile=flagfile, train_config=cfgs.train,
        augment_config=cfgs.augment, optimizer=optimizer.state_dict(), extra=extra))


def _read_entries(tc: TrainConfig) -> tuple[list[Entry], int]:
    report = read_manifests(tc.train_manifest, measure=True)
    entries = [e for e in report.entries if 0 < e.duration <= tc.max_duration]
    if not entries:
        raise DataError(f"no usable utterances in {tc.train_manifest} (after max_duration={tc.max_duration})")
    return entries, report.bad_lines


def _restore(run: _Run, entries: list[Entry], resume: bool, init: str) -> None:
    """Resume (weights, optimizer, scaler, position), or initialise weights, or compute feature stats."""
    tc, say, model = run.cfgs.train, run.say, run.core
    path = _from_rank0(ckpt_io.newest(tc.exp_dir) if resume and run.dist.is_main else None, run.dist)
    if resume and path is None:
        say(f"--resume: no checkpoint in {tc.exp_dir} yet; starting from scratch")
    if path:
        ck = ckpt_io.load(path)
        if ck.tokenizer.sha1 != run.tokenizer.sha1:
            raise ConfigError(f"{path} was trained with another tokenizer; resume with the same exp_dir")
        if ck.optimizer is None:
            raise ConfigError(f"{path} holds no optimizer state (a shipped model?); use --init to fine-tune from it")
        try:
            model.load_state_dict(ck.state_dict)
        except RuntimeError as e:  # other model flags (shape, or a training-only head added or removed)
            raise ConfigError(f"{path} does not fit this model's flags; resume with the flags it was trained "
                              f"with, or start a new --exp_dir with --init={path}") from e
        run.optimizer.load_state_dict(ck.optimizer)
        if run.scaler is not None and ck.extra.get("scaler"):
            run.scaler.load_state_dict(ck.extra["scaler"])
        ex = ck.extra
        run.pos = _Position(ck.step, ex.get("epoch", 0), ex.get("batch", 0))
        old_world = int(ex.get("world_size", 1))
        if old_world != run.dist.world_size:  # same point of the epoch, counted in the new shard's batches
            run.pos.batch = run.pos.batch * old_world // run.dist.world_size
            say(f"checkpoint was written by {old_world} process(es), now {run.dist.world_size}: "
                f"continuing epoch {run.pos.epoch} from shard batch {run.pos.batch}")
        run.last_eval = ex.get("dev") or None
        say(f"resumed from {path} at step {run.pos.step} (epoch {run.pos.epoch}, batch {run.pos.batch})")
    elif init:
        src, src_ck = ckpt_io.load_model(init)
        if src_ck.tokenizer.sha1 != run.tokenizer.sha1:
            raise ConfigError(f"{init} was trained with another tokenizer; pass its tokenizer with --tokenizer")
        # The training-only CTC head may be on either side (shipped models drop it); a new one starts fresh.
        try:
            missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
        except RuntimeError as e:  # a tensor of another size
            raise ConfigError(f"{init} does not fit this model's shape; use the same model flags") from e
        bad = [k for k in missing + unexpected if not is_training_only(k)]
        if bad:
            raise ConfigError(f"{init} does not fit this model's shape (e.g. {bad[0]}); use the same model flags")
        say(f"initialised weights from {init}")
    elif run.dist.is_main:  # the other ranks get the statistics with the weights
        mean, std = feature_stats(SpeechDataset(entries, run.tokenizer, run.cfgs.features))
        model.encoder.feat_mean.copy_(mean.to(model.encoder.feat_mean.device))
        model.encoder.feat_std.copy_(std.to(model.encoder.feat_std.device))


def _setup(cfgs: AllConfigs, dist: DistInfo, device: torch.device, entries: list[Entry], flagfile: str,
           resume: bool, init: str) -> _Run:
    tc = cfgs.train
    say = _RunLog(os.path.join(tc.exp_dir, "train.log"), enabled=dist.is_main)
    tokenizer = prepare_tokenizer(cfgs, [e.text for e in entries], dist)
    if tokenizer.vocab_size != cfgs.model.vocab_size:
        cfgs = replace(cfgs, model=replace(cfgs.model, vocab_size=tokenizer.vocab_size))
    dev_set = None
    if tc.dev_manifest:
        dev_set = SpeechDataset(read_manifests(tc.dev_manifest, measure=True).entries, tokenizer, cfgs.features)
    if device.type == "cpu" and tc.precision == "bf16" and not cpu_bf16_is_native():
        say("precision=bf16: this CPU has no AMX or AVX-512 BF16 (bf16 would be emulated and slower, or "
            "unsupported); training in fp32")
    elif autocast_dtype(tc, device) is None and tc.precision != "fp32":
        say(f"precision={tc.precision} does not apply on {device}; training in fp32")
    model = build_model(cfgs.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype(tc, device) == torch.float16 else None
    run = _Run(cfgs, dist, device, model, optimizer, scaler, tokenizer, dev_set, say, flagfile, _Position(),
               time.time())
    _restore(run, entries, resume, init)
    if dist.enabled:
        for t in model.state_dict().values():  # identical start on every rank (weights and feature stats)
            torch.distributed.broadcast(t, 0)
        run.model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    # Dropout differs per rank and per resume point; the initial weights came from tc.seed alone.
    torch.manual_seed(tc.seed + 7919 * dist.rank + run.pos.step)
    run.model.train()
    return run


# ---------------------------------------------------------------------------------------------- the loop


def _timed_out(run: _Run) -> bool:
    """``max_minutes`` passed on any rank (all ranks agree, so they stop at the same step)."""
    tc = run.cfgs.train
    if tc.max_minutes <= 0:
        return False
    late = float(time.time() - run.t0 > tc.max_minutes * 60)
    return _all_sum([late], run.dist, run.device)[0] > 0


def _after_step(run: _Run, norm: float) -> bool:
    """Progress, logs, sync check, dev evaluation and checkpoint after an update; True to stop."""
    tc, pos, say = run.cfgs.train, run.pos, run.say
    step = pos.step
    if run.bar is not None:
        run.bar.update(1)
        run.bar.set_postfix(loss=f"{run.last_loss:.3f}", lr=f"{lr_at(step, tc):.2e}")
    if step % tc.log_every == 0:
        skipped = int(_all_sum([pos.skipped], run.dist, run.device)[0])
        coverage = getattr(run.core, "window_coverage", None)
        say(f"step {step} epoch {pos.epoch} loss {run.last_loss:.4f} ({run.last_token_loss:.3f}/token) "
            + (f"windows_hold {coverage:.1%} " if coverage is not None else "")
            + f"grad_norm {norm:.2f} lr {lr_at(step, tc):.2e} "
            f"skipped_audio {skipped} elapsed {time.time() - run.t0:.0f}s")
    if tc.sync_check_every > 0 and run.dist.enabled and step % tc.sync_check_every == 0:
        checksum = check_in_sync(run.model, run.dist, run.device)
        say(f"sync check step {step}: weights identical on {run.dist.world_size} ranks (checksum {checksum:.10g})")
    timed_out = _timed_out(run)
    if run.dev_set is not None and (step % tc.eval_every == 0 or step == tc.max_steps):
        ev = run.last_eval = evaluate(run.core, run.dev_set, run.cfgs, tc.eval_utterances, run.device, run.dist)
        say(f"eval step {step}: dev loss {ev['loss']:.4f} WER {ev['wer']:.2%} CER {ev['cer']:.2%} "
            f"on {ev['utterances']} utterances; e.g. {ev['example']}")
    if step % tc.checkpoint_every == 0 or step >= tc.max_steps or timed_out:
        if run.dist.is_main:
            extra = {"epoch": pos.epoch, "batch": pos.batch, "skipped_audio": pos.skipped,
                     "world_size": run.dist.world_size, "dev": run.last_eval or {},
                     "scaler": run.scaler.state_dict() if run.scaler is not None else None}
            _save(ckpt_io.step_path(tc.exp_dir, step), run.model, run.optimizer, run.cfgs, run.tokenizer, step,
                  run.flagfile, extra)
            ckpt_io.prune(tc.exp_dir, tc.keep_checkpoints)
    return step >= tc.max_steps or timed_out


def _train_epoch(run: _Run, dataset: SpeechDataset, durations: list[float], gen: torch.Generator) -> bool:
    """Train from ``run.pos`` to the end of its epoch or a stop; True when training should stop."""
    tc, pos, dist = run.cfgs.train, run.pos, run.dist
    batches = shard_batches(make_batches(durations, tc.batch_size, tc.max_batch_seconds, tc.seed + pos.epoch),
                            dist.rank, dist.world_size)
    start_step, from_start = pos.step, pos.batch == 0
    group: list[dict] = []
    loader = _loader(dataset, batches, pos.batch, tc.num_workers, pin=run.device.type == "cuda")
    for k, batch in enumerate(loader, start=pos.batch):
        pos.skipped += batch["skipped"]
        if batch["feats"] is None and not dist.enabled:  # alone, simply drop it; under DDP every rank must step
            continue
        group.append(batch)
        if len(group) < tc.accum_steps:
            continue
        run.last_loss, norm = train_step(run.model, run.optimizer, group, run.cfgs, pos.step, run.device, gen,
                                         run.scaler, dist)
        real = [b for b in group if b["feats"] is not None]  # this rank's share, for the per-token figure
        tokens = sum(int(b["token_lengths"].sum()) for b in real)
        run.last_token_loss = run.last_loss * sum(len(b["token_lengths"]) for b in real) / max(1, tokens)
        group = []
        pos.step, pos.batch = pos.step + 1, k + 1
        if _after_step(run, norm):
            return True
    if from_start and pos.step == start_step:
        raise DataError(f"epoch {pos.epoch} made no optimizer step: {len(batches)} batch(es) per process for "
                        f"accum_steps={tc.accum_steps} and {dist.world_size} process(es); lower batch_size or "
                        "accum_steps, use fewer processes, or check that the audio is readable")
    pos.epoch, pos.batch = pos.epoch + 1, 0
    return False


def train(cfgs: AllConfigs, flagfile: str = "", resume: bool = False, init: str = "") -> dict:
    """Train per ``cfgs``; returns the final step, the last loss and the last dev metrics."""
    tc = cfgs.train
    device = pick_device(tc)
    dist = setup_distributed(device)
    ok = False
    try:
        result = _train(cfgs, dist, device, flagfile, resume, init)
        ok = True
        return result
    finally:
        teardown_distributed(dist, ok)


def _train(cfgs: AllConfigs, dist: DistInfo, device: torch.device, flagfile: str, resume: bool, init: str) -> dict:
    tc = cfgs.train
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(tc.seed)
    if dist.is_main:
        os.makedirs(tc.exp_dir, exist_ok=True)
    entries, bad_lines = _read_entries(tc)
    run = _setup(cfgs, dist, device, entries, flagfile, resume, init)
    dataset = SpeechDataset(entries, run.tokenizer, run.cfgs.features,
                            _make_augmenter(run.cfgs, tc.seed + 1000 * dist.rank + run.pos.step))
    hours = sum(e.duration for e in entries) / 3600
    run.say(f"train: {len(entries)} utterances, {hours:.2f} h ({bad_lines} bad manifest lines skipped); "
            f"world size {dist.world_size}; device {device}; effective batch {tc.batch_size} x {tc.accum_steps} "
            f"x {dist.world_size}")
    gen = torch.Generator().manual_seed(tc.seed + dist.rank + run.pos.step)
    if dist.is_main:
        from tqdm import tqdm

        run.bar = tqdm(total=tc.max_steps, initial=run.pos.step, desc="train", unit="step", dynamic_ncols=True,
                       disable=not os.isatty(2) and not os.environ.get("RNNT_PROGRESS"))
    durations = [e.duration for e in entries]
    while run.pos.step < tc.max_steps and not _train_epoch(run, dataset, durations, gen):
        pass
    if run.bar is not None:
        run.bar.close()
    skipped = int(_all_sum([run.pos.skipped], dist, device)[0])
    if skipped:
        run.say(f"skipped {skipped} unreadable audio file(s) in total")
    run.say(f"finished at step {run.pos.step}, loss {run.last_loss:.4f}")
    run.say.close()
    return {"step": run.pos.step, "loss": run.last_loss, "dev": run.last_eval or {}, "skipped_audio": skipped,
            "rank": dist.rank}
