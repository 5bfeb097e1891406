"""Training: ``train(cfgs)`` runs the loop; ``lr_at`` is the pure schedule; ``train_step`` one update.

Legend: B batch, T_in feature frames, F mel bins, U targets.

Works alone or under ``torchrun`` (DistributedDataParallel: gloo on CPU, nccl on CUDA). Each rank
reads its own shard of every epoch's batches; rank 0 alone writes checkpoints and logs. A checkpoint
stores the optimizer, the step and the data position (epoch, batch), so ``resume`` continues exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from rnnt import checkpoint as ckpt_io
from rnnt.backend import TorchBackend
from rnnt.config import AllConfigs, AugmentConfig, TrainConfig
from rnnt.data import (EpochBatches, SpeechDataset, collate, feature_stats, make_batches, read_manifests,
                       shard_batches)
from rnnt.errors import ConfigError, DataError
from rnnt.metrics import corpus_cer, corpus_wer
from rnnt.session import Recognizer
from rnnt.tokenizer import Tokenizer, train_bpe
from rnnt.transducer import Transducer, build_model

log = logging.getLogger("rnnt.train")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` over ``decay_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.decay_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA GPU is visible; use --device=cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def spec_augment(feats: torch.Tensor, lengths: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Frequency and time masks (filled with each row's mean) plus a random mel-axis warp (VTLP).

    feats (B, T_in, F) -> (B, T_in, F); the input is not modified.
    """
    x = feats.clone()
    b, t_max, f = x.shape
    if cfg.vtlp > 0:
        alpha = 1 + (torch.rand(b, generator=gen) * 2 - 1) * cfg.vtlp  # (B,)
        src = torch.clamp(torch.arange(f)[None, :].float() / alpha[:, None], max=f - 1)  # (B, F) source bins
        lo = src.floor().long()
        hi = torch.clamp(lo + 1, max=f - 1)
        w = (src - lo.float())[:, None, :].to(x.dtype)
        x = torch.gather(x, 2, lo[:, None, :].expand(b, t_max, f)) * (1 - w) + \
            torch.gather(x, 2, hi[:, None, :].expand(b, t_max, f)) * w
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
    """Load ``train.tokenizer``, or the run's own ``exp_dir/tokenizer.model``, or train one on ``texts``."""
    if cfgs.train.tokenizer:
        return Tokenizer.load(cfgs.train.tokenizer)
    path = os.path.join(cfgs.train.exp_dir, "tokenizer.model")
    if not os.path.isfile(path) and dist.is_main:
        log.info("training a %d-piece BPE tokenizer on %d texts", cfgs.model.vocab_size, len(texts))
        train_bpe(texts, cfgs.model.vocab_size, path)
    if dist.world_size > 1:
        torch.distributed.barrier()
    return Tokenizer.load(path)


def evaluate(model: Transducer, dataset: SpeechDataset, cfgs: AllConfigs, max_utterances: int,
             device: torch.device) -> dict:
    """Dev loss (per utterance) and greedy streaming WER/CER on up to ``max_utterances`` items."""
    model.eval()
    refs, hyps, losses = [], [], []
    n = min(len(dataset), max_utterances)
    rec = Recognizer(TorchBackend(model, cfgs.features), dataset.tokenizer)
    with torch.inference_mode():
        for start in range(0, n, 16):
            batch = collate([dataset[i] for i in range(start, min(n, start + 16))])
            if batch["feats"] is None:
                continue
            loss = model(batch["feats"].to(device), batch["feat_lengths"].to(device), batch["tokens"].to(device),
                         batch["token_lengths"].to(device))
            losses += loss.tolist()
        for i in range(n):
            from rnnt.audio import load_audio

            e = dataset.entries[i]
            try:
                hyps.append(rec.transcribe(load_audio(e.audio)))
                refs.append(e.text)
            except Exception as err:  # an unreadable dev file must not stop training
                log.warning("dev decode skipped %s: %s", e.audio, err)
    model.train()
    wer, cer = corpus_wer(refs, hyps), corpus_cer(refs, hyps)
    return {"loss": float(np.mean(losses)) if losses else float("nan"), "wer": wer.rate, "cer": cer.rate,
            "utterances": len(refs), "example": (refs[0], hyps[0]) if refs else None}


def train_step(model, optimizer, batches: list[dict], cfgs: AllConfigs, step: int, device: torch.device,
               gen: torch.Generator) -> tuple[float, float]:
    """One optimizer update over ``accum_steps`` micro-batches; returns (mean loss per utterance, grad norm)."""
    tc = cfgs.train
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, tc)
    total, count = 0.0, 0
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.precision) if device.type == "cuda" else None
    for k, batch in enumerate(batches):
        feats = batch["feats"]
        if tc.augment:
            feats = spec_augment(feats, batch["feat_lengths"], cfgs.augment, gen)
        sync = k == len(batches) - 1 or not hasattr(model, "no_sync")
        ctx = contextlib.nullcontext() if sync else model.no_sync()
        with ctx:
            with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                loss = model(feats.to(device), batch["feat_lengths"].to(device), batch["tokens"].to(device),
                             batch["token_lengths"].to(device))
            (loss.sum() / (len(loss) * len(batches))).backward()
        total += float(loss.detach().sum())
        count += len(loss)
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad))
    if math.isfinite(norm):
        optimizer.step()
    else:
        log.warning("step %d: non-finite gradient norm, update skipped", step)
    optimizer.zero_grad(set_to_none=True)
    return total / max(1, count), norm


class _RunLog:
    """Log lines to ``exp_dir/train.log`` (rank 0) and to the logger."""

    def __init__(self, path: str | None) -> None:
        self._f = open(path, "a", encoding="utf-8") if path else None

    def __call__(self, msg: str) -> None:
        log.info(msg)
        if self._f:
            self._f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")
            self._f.flush()


def _loader(dataset: SpeechDataset, batches: list[list[int]], start: int, workers: int):
    return torch.utils.data.DataLoader(dataset, batch_sampler=EpochBatches(batches, start), collate_fn=collate,
                                       num_workers=workers, worker_init_fn=_worker_init if workers else None,
                                       persistent_workers=False, prefetch_factor=4 if workers else None)


def _save(path: str, model, optimizer, cfgs: AllConfigs, tokenizer: Tokenizer, step: int, flagfile: str,
          extra: dict) -> None:
    core = model.module if hasattr(model, "module") else model
    ckpt_io.save(path, ckpt_io.Checkpoint(
        model_config=cfgs.model, feature_config=cfgs.features, tokenizer=tokenizer,
        state_dict=core.state_dict(), step=step, flagfile=flagfile, train_config=cfgs.train,
        augment_config=cfgs.augment, optimizer=optimizer.state_dict(), extra=extra))


def train(cfgs: AllConfigs, flagfile: str = "", resume: bool = False, init: str = "") -> dict:
    """Train per ``cfgs``; returns the final step, the last loss and the last dev metrics."""
    tc = cfgs.train
    device = pick_device(tc)
    dist = setup_distributed(device)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    os.makedirs(tc.exp_dir, exist_ok=True)
    say = _RunLog(os.path.join(tc.exp_dir, "train.log") if dist.is_main else None)

    train_report = read_manifests(tc.train_manifest, measure=True)
    entries = [e for e in train_report.entries if 0 < e.duration <= tc.max_duration]
    if not entries:
        raise DataError(f"no usable utterances in {tc.train_manifest} (after max_duration={tc.max_duration})")
    tokenizer = prepare_tokenizer(cfgs, [e.text for e in entries], dist)
    if tokenizer.vocab_size != cfgs.model.vocab_size:
        cfgs = replace(cfgs, model=replace(cfgs.model, vocab_size=tokenizer.vocab_size))
    dev_set = None
    if tc.dev_manifest:
        dev_entries = read_manifests(tc.dev_manifest, measure=True).entries
        dev_set = SpeechDataset(dev_entries, tokenizer, cfgs.features)

    resume_path = ckpt_io.newest(tc.exp_dir) if resume else None
    if resume and resume_path is None:
        say(f"--resume: no checkpoint in {tc.exp_dir} yet; starting from scratch")
    model = build_model(cfgs.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    step, epoch, batch_pos, extra = 0, 0, 0, {}
    if resume_path:
        ck = ckpt_io.load(resume_path)
        if ck.tokenizer.sha1 != tokenizer.sha1:
            raise ConfigError(f"{resume_path} was trained with another tokenizer; resume with the same exp_dir")
        model.load_state_dict(ck.state_dict)
        optimizer.load_state_dict(ck.optimizer)
        step, extra = ck.step, ck.extra
        epoch, batch_pos = extra.get("epoch", 0), extra.get("batch", 0)
        say(f"resumed from {resume_path} at step {step} (epoch {epoch}, batch {batch_pos})")
    elif init:
        src, _ = ckpt_io.load_model(init)
        model.load_state_dict(src.state_dict())
        say(f"initialised weights from {init}")
    else:
        mean, std = feature_stats(SpeechDataset(entries, tokenizer, cfgs.features))
        model.encoder.feat_mean.copy_(mean)
        model.encoder.feat_std.copy_(std)
    if dist.world_size > 1:
        for p in model.state_dict().values():  # identical start on every rank
            torch.distributed.broadcast(p, 0)
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()

    dataset = SpeechDataset(entries, tokenizer, cfgs.features, _make_augmenter(cfgs, tc.seed + 1000 * dist.rank + step))
    hours = sum(e.duration for e in entries) / 3600
    say(f"train: {len(entries)} utterances, {hours:.2f} h ({train_report.bad_lines} bad manifest lines skipped); "
        f"world size {dist.world_size}; device {device}")
    gen = torch.Generator().manual_seed(tc.seed + dist.rank + step)
    t0, skipped, last_loss, last_eval = time.time(), 0, float("nan"), {}
    bar = None
    if dist.is_main:
        from tqdm import tqdm

        bar = tqdm(total=tc.max_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not os.isatty(2) and not os.environ.get("RNNT_PROGRESS"))
    stop = False
    while step < tc.max_steps and not stop:
        batches = shard_batches(make_batches([e.duration for e in entries], tc.batch_size, tc.max_batch_seconds,
                                             tc.seed + epoch), dist.rank, dist.world_size)
        group: list[dict] = []
        for k, batch in enumerate(_loader(dataset, batches, batch_pos, tc.num_workers), start=batch_pos):
            skipped += batch["skipped"]
            if batch["feats"] is None:
                continue
            group.append(batch)
            if len(group) < tc.accum_steps:
                continue
            last_loss, norm = train_step(model, optimizer, group, cfgs, step, device, gen)
            group = []
            step += 1
            position = {"epoch": epoch, "batch": k + 1, "skipped_audio": skipped}
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{lr_at(step, tc):.2e}")
            if dist.is_main and step % tc.log_every == 0:
                say(f"step {step} epoch {epoch} loss {last_loss:.4f} grad_norm {norm:.2f} lr {lr_at(step, tc):.2e} "
                    f"skipped_audio {skipped} elapsed {time.time() - t0:.0f}s")
            timed_out = tc.max_minutes > 0 and time.time() - t0 > tc.max_minutes * 60
            if dist.is_main and dev_set is not None and (step % tc.eval_every == 0 or step == tc.max_steps):
                core = model.module if hasattr(model, "module") else model
                last_eval = evaluate(core, dev_set, cfgs, tc.eval_utterances, device)
                say(f"eval step {step}: dev loss {last_eval['loss']:.4f} WER {last_eval['wer']:.2%} "
                    f"CER {last_eval['cer']:.2%} on {last_eval['utterances']} utterances; e.g. {last_eval['example']}")
            if step % tc.checkpoint_every == 0 or step >= tc.max_steps or timed_out:
                if dist.is_main:
                    _save(ckpt_io.step_path(tc.exp_dir, step), model, optimizer, cfgs, tokenizer, step, flagfile,
                          {**position, "dev": last_eval})
                    ckpt_io.prune(tc.exp_dir, tc.keep_checkpoints)
            if step >= tc.max_steps or timed_out:
                stop = True
                break
        else:
            epoch, batch_pos = epoch + 1, 0
    if bar:
        bar.close()
    if skipped:
        say(f"skipped {skipped} unreadable audio file(s) in total")
    say(f"finished at step {step}, loss {last_loss:.4f}")
    if dist.world_size > 1:
        torch.distributed.barrier()
    return {"step": step, "loss": last_loss, "dev": last_eval, "skipped_audio": skipped}
