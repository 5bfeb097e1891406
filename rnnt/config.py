"""Frozen configuration dataclasses, each checked in ``__post_init__``.

Entry points turn absl flags into these (``cli/flags.py``); the library never reads flags. Field names
are the flag names. Checkpoints and ONNX metadata store ``FeatureConfig`` and ``ModelConfig`` so that
inference needs nothing but the model file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from rnnt.errors import ConfigError


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def to_dict(cfg: Any) -> dict:
    """A plain dict of a config dataclass (JSON-serialisable)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, d: dict) -> Any:
    """Build ``cls`` from a dict, ignoring unknown keys (older or newer files) and checking values."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000  # input rate in Hz; every source is resampled to it
    n_fft: int = 512  # FFT size in samples (window zero-padded to it)
    win_length: int = 400  # analysis window, 25 ms
    hop_length: int = 160  # frame shift, 10 ms
    n_mels: int = 80  # mel bins
    f_min: float = 20.0  # lowest mel edge in Hz
    f_max: float = 7600.0  # highest mel edge in Hz
    log_floor: float = 1e-6  # power floor before the log

    def __post_init__(self) -> None:
        _check(self.sample_rate > 0, f"sample_rate must be positive, got {self.sample_rate}")
        _check(0 < self.win_length <= self.n_fft, f"need 0 < win_length <= n_fft, got {self.win_length}, {self.n_fft}")
        _check(0 < self.hop_length <= self.win_length, f"need 0 < hop_length <= win_length, got {self.hop_length}")
        _check(self.n_mels > 0, f"n_mels must be positive, got {self.n_mels}")
        _check(0 <= self.f_min < self.f_max <= self.sample_rate / 2,
               f"need 0 <= f_min < f_max <= sample_rate/2, got {self.f_min}, {self.f_max}")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 256  # output classes including blank (id 0)
    n_mels: int = 80  # feature bins per input frame
    stack: int = 4  # frames stacked per encoder step (time reduction)
    enc_layers: int = 4  # encoder LSTM layers
    enc_hidden: int = 320  # encoder LSTM width
    enc_out: int = 320  # encoder output projection
    pred_embed: int = 320  # predictor token embedding
    pred_layers: int = 1  # predictor LSTM layers
    pred_hidden: int = 320  # predictor LSTM width
    pred_out: int = 320  # predictor output projection
    joint_dim: int = 320  # joint hidden width
    joint_mode: str = "sum"  # "sum" of projections or "concat" then a linear layer
    dropout: float = 0.1  # dropout in encoder and predictor during training
    ctc_weight: float = 0.0  # weight of an auxiliary CTC loss on the encoder while training (0 = off; decoding ignores it)
    prune_range: int = 0  # pruned RNN-T: train the joint on this many token positions per frame (0 = all)
    simple_loss_scale: float = 0.5  # weight of the simple-lattice loss whose alignment picks those positions

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_mels", "stack", "enc_layers", "enc_hidden", "enc_out", "pred_embed",
                     "pred_layers", "pred_hidden", "pred_out", "joint_dim"):
            _check(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        _check(self.vocab_size >= 3, f"vocab_size must be >= 3 (blank, unk, one symbol), got {self.vocab_size}")
        _check(self.joint_mode in ("sum", "concat"), f"joint_mode must be 'sum' or 'concat', got {self.joint_mode!r}")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _check(self.ctc_weight >= 0.0, f"ctc_weight must be >= 0, got {self.ctc_weight}")
        _check(self.prune_range == 0 or self.prune_range >= 2,
               f"prune_range must be 0 (off) or >= 2, got {self.prune_range}")
        _check(self.simple_loss_scale >= 0.0, f"simple_loss_scale must be >= 0, got {self.simple_loss_scale}")


@dataclass(frozen=True)
class DecodingConfig:
    max_symbols_per_frame: int = 5  # most tokens emitted for one encoder frame
    chunk_frames: int = 4  # encoder frames per encoder call (latency = chunk_frames * stack * 10 ms)
    beam: int = 12  # hypotheses kept by beam search (1 with no language model = greedy search)
    lm: str = "auto"  # token n-gram LM (.npz from cli.train_lm) fused into the search; "auto": the lm.npz beside the model if any; "" = none
    lm_weight: float = 0.3  # weight of the language model's log-probabilities in the search's ranking
    length_bonus: float = 1.0  # added to a hypothesis' score per token (offsets the language model's pull to short outputs)

    def __post_init__(self) -> None:
        _check(self.max_symbols_per_frame >= 1, f"max_symbols_per_frame must be >= 1, got {self.max_symbols_per_frame}")
        _check(self.chunk_frames >= 1, f"chunk_frames must be >= 1, got {self.chunk_frames}")
        _check(self.beam >= 1, f"beam must be >= 1, got {self.beam}")
        _check(self.lm_weight >= 0.0, f"lm_weight must be >= 0, got {self.lm_weight}")

    @property
    def greedy(self) -> bool:
        """True when decoding is plain greedy search (beam 1, no language model; "auto" counts as one)."""
        return self.beam == 1 and not self.lm

    def describe(self) -> str:
        """One line for logs and reports: "greedy" or "beam 12 + lm.npz (weight 0.3, bonus 1/token)"."""
        if self.greedy:
            return "greedy"
        lm = (f" + {os.path.basename(self.lm)} (weight {self.lm_weight:g}, bonus {self.length_bonus:g}/token)"
              if self.lm else "")
        return f"beam {self.beam}{lm}"


@dataclass(frozen=True)
class EndpointConfig:
    enabled: bool = True  # split a live stream into utterances
    silence_no_speech: float = 2.4  # seconds of blanks ending an utterance with nothing decoded
    silence_after_speech: float = 1.2  # seconds of blanks ending an utterance after speech
    max_utterance: float = 20.0  # seconds after which an utterance is always ended
    reset_encoder: bool = False  # also reset the encoder state at an endpoint (the predictor always resets)

    def __post_init__(self) -> None:
        _check(self.silence_no_speech > 0, f"silence_no_speech must be positive, got {self.silence_no_speech}")
        _check(self.silence_after_speech > 0, f"silence_after_speech must be positive, got {self.silence_after_speech}")
        _check(self.max_utterance > 0, f"max_utterance must be positive, got {self.max_utterance}")


@dataclass(frozen=True)
class AugmentConfig:
    speed_perturb: float = 0.1  # speed factor drawn from [1-x, 1+x]; 0 disables
    noise_prob: float = 0.5  # chance of additive noise
    snr_min: float = 5.0  # lowest SNR in dB
    snr_max: float = 35.0  # highest SNR in dB
    reverb_prob: float = 0.3  # chance of a synthetic room impulse response
    bandlimit_prob: float = 0.2  # chance of telephone band-limiting (300-3400 Hz, 8 kHz)
    gain_db: float = 12.0  # gain drawn from [-x, +x] dB
    clip_prob: float = 0.05  # chance of hard clipping
    vtlp: float = 0.1  # vocal-tract-length warp factor drawn from [1-x, 1+x] on the mel axis; 0 disables
    formant_warp: float = 0.0  # spectral-envelope (formant) warp factor from [1-x, 1+x], pitch kept; 0 disables
    spec_eq_db: float = 0.0  # random smooth equalizer on the log-mel axis, up to +-x dB per utterance; 0 disables
    tempo_warp: float = 0.0  # local tempo: each stretch of tempo_frames frames is sped up or slowed by up to (1+x)x, length kept; 0 disables
    tempo_frames: int = 40  # frames per stretch of one tempo (40: 0.4 s at a 10 ms hop)
    spec_freq_masks: int = 2  # SpecAugment frequency masks
    spec_freq_width: int = 15  # widest frequency mask in bins
    spec_time_masks: int = 4  # SpecAugment time masks
    spec_time_width: float = 0.05  # widest time mask as a fraction of the utterance

    def __post_init__(self) -> None:
        for name in ("noise_prob", "reverb_prob", "bandlimit_prob", "clip_prob"):
            v = getattr(self, name)
            _check(0.0 <= v <= 1.0, f"{name} must be a probability in [0, 1], got {v}")
        _check(0.0 <= self.speed_perturb < 0.5, f"speed_perturb must be in [0, 0.5), got {self.speed_perturb}")
        _check(self.snr_min <= self.snr_max, f"need snr_min <= snr_max, got {self.snr_min}, {self.snr_max}")
        _check(0.0 <= self.vtlp < 0.5, f"vtlp must be in [0, 0.5), got {self.vtlp}")
        _check(0.0 <= self.formant_warp < 0.5, f"formant_warp must be in [0, 0.5), got {self.formant_warp}")
        _check(0.0 <= self.spec_eq_db <= 30.0, f"spec_eq_db must be in [0, 30], got {self.spec_eq_db}")
        _check(0.0 <= self.tempo_warp <= 1.0, f"tempo_warp must be in [0, 1], got {self.tempo_warp}")
        _check(self.tempo_frames >= 2, f"tempo_frames must be >= 2, got {self.tempo_frames}")


@dataclass(frozen=True)
class TrainConfig:
    train_manifest: str = ""  # JSONL manifest(s), comma-separated
    dev_manifest: str = ""  # JSONL manifest for dev loss and WER
    exp_dir: str = "exp/run"  # checkpoints, logs and the tokenizer go here
    tokenizer: str = ""  # sentencepiece model; trained from the train texts into exp_dir when empty
    batch_size: int = 16  # utterances per batch (upper bound when max_batch_seconds is set)
    max_batch_seconds: float = 0.0  # cap on audio seconds per batch; 0 = use batch_size only
    max_duration: float = 20.0  # utterances longer than this are skipped
    accum_steps: int = 1  # gradient accumulation
    lr: float = 1e-3  # peak learning rate
    warmup_steps: int = 500  # linear warm-up
    prune_warmup_steps: int = 500  # with prune_range: steps on the exact loss while the simple heads learn to align
    decay_steps: int = 50000  # cosine decay from lr to min_lr over these steps after warm-up
    min_lr: float = 1e-5  # floor of the schedule
    weight_decay: float = 1e-6  # Adam L2
    clip_grad: float = 5.0  # gradient norm clip
    max_steps: int = 10000  # optimizer steps to train
    max_minutes: float = 0.0  # stop (with a checkpoint) after this many minutes; 0 = no limit
    checkpoint_every: int = 500  # steps between checkpoints
    keep_checkpoints: int = 3  # newest step checkpoints kept
    eval_every: int = 1000  # steps between dev evaluations
    eval_utterances: int = 200  # dev utterances decoded for WER
    log_every: int = 50  # steps between log lines
    num_workers: int = 1  # data loader worker processes
    seed: int = 1234
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 only on CUDA; bf16 on CUDA and CPU)
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads; 0 = torch default
    augment: bool = True  # on-the-fly waveform augmentation and SpecAugment
    sync_check_every: int = 0  # under torchrun, every N steps compare a weight checksum across ranks and fail if they differ; 0 = off

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.accum_steps >= 1, f"accum_steps must be >= 1, got {self.accum_steps}")
        _check(self.lr > 0, f"lr must be positive, got {self.lr}")
        _check(self.prune_warmup_steps >= 0, f"prune_warmup_steps must be >= 0, got {self.prune_warmup_steps}")
        _check(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        _check(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        _check(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        _check(self.precision in ("fp32", "bf16", "fp16"), f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        _check(self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {self.device!r}")
        _check(self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")


@dataclass(frozen=True)
class AllConfigs:
    """Everything a training run is made of (stored in checkpoints)."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class SourceConfig:
    block_seconds: float = 0.1  # seconds of audio per block read from the source (microphone callback size)
    queue_seconds: float = 10.0  # audio a live source may queue ahead of the recognizer; beyond it blocks are dropped and counted
    max_seconds: float = 0.0  # stop after this many seconds of audio; 0 = until the source ends or Ctrl-C
    realtime: bool = False  # read a file or a recorded URL at real-time pace, like a live source
    reconnect_attempts: int = 5  # URL: reconnects in a row after a dropped connection before giving up; 0 = none
    reconnect_delay: float = 1.0  # URL: seconds before the first reconnect, doubled after each failed one
    reconnect_delay_max: float = 30.0  # URL: longest wait between reconnects in seconds
    stall_seconds: float = 20.0  # URL: a connection that delivers no audio for this many seconds counts as dropped

    def __post_init__(self) -> None:
        _check(0.01 <= self.block_seconds <= 5.0, f"block_seconds must be in [0.01, 5], got {self.block_seconds}")
        _check(self.queue_seconds >= self.block_seconds,
               f"queue_seconds must be >= block_seconds ({self.block_seconds}), got {self.queue_seconds}")
        _check(self.max_seconds >= 0, f"max_seconds must be >= 0 (0 = no limit), got {self.max_seconds}")
        _check(self.reconnect_attempts >= 0, f"reconnect_attempts must be >= 0, got {self.reconnect_attempts}")
        _check(0 <= self.reconnect_delay <= self.reconnect_delay_max,
               f"need 0 <= reconnect_delay <= reconnect_delay_max, got {self.reconnect_delay}, {self.reconnect_delay_max}")
        _check(self.stall_seconds > 0, f"stall_seconds must be positive, got {self.stall_seconds}")


@dataclass(frozen=True)
class OutputConfig:
    output: str = "text"  # transcript format: text, jsonl (partial and final events with word times), srt or vtt
    out: str = ""  # write the transcript to this file (the terminal still shows the words live); empty = standard output
    stats: bool = False  # at the end print the real-time factor, arrival-to-words latency (median, p95) and dropped blocks

    def __post_init__(self) -> None:
        _check(self.output in ("text", "jsonl", "srt", "vtt"),
               f"output must be text, jsonl, srt or vtt, got {self.output!r}")
