"""Self-describing checkpoints: one file with weights, every config, the tokenizer, the flagfile and step.

Writes are atomic (temporary file, fsync, rename), so a kill never leaves a broken checkpoint.
Loading needs nothing but the file.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from rnnt.config import AugmentConfig, FeatureConfig, ModelConfig, TrainConfig, from_dict, to_dict
from rnnt.errors import CheckpointError, RnntError
from rnnt.tokenizer import Tokenizer
from rnnt.transducer import Transducer, build_model

FORMAT = "rnnt-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    model_config: ModelConfig
    feature_config: FeatureConfig
    tokenizer: Tokenizer
    state_dict: dict
    step: int = 0
    flagfile: str = ""
    train_config: TrainConfig | None = None
    augment_config: AugmentConfig | None = None
    optimizer: dict | None = None  # optimizer and schedule state, absent in shipped models
    extra: dict = field(default_factory=dict)  # data position, metrics, anything else to resume


def save(path: str, ckpt: Checkpoint, half: bool = False) -> None:
    """Write ``ckpt`` atomically. ``half`` stores float weights as fp16 (shipping)."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu() for k, v in ckpt.state_dict.items()}
    payload = {
        "format": FORMAT, "version": VERSION, "step": ckpt.step, "flagfile": ckpt.flagfile,
        "model_config": to_dict(ckpt.model_config), "feature_config": to_dict(ckpt.feature_config),
        "train_config": to_dict(ckpt.train_config) if ckpt.train_config else None,
        "augment_config": to_dict(ckpt.augment_config) if ckpt.augment_config else None,
        "tokenizer": ckpt.tokenizer.model_proto, "tokenizer_sha1": ckpt.tokenizer.sha1,
        "state_dict": state, "optimizer": ckpt.optimizer, "extra": ckpt.extra,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    buf = io.BytesIO()
    torch.save(payload, buf)
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: str) -> Checkpoint:
    """Read a checkpoint; any problem is a one-line ``CheckpointError``."""
    if not os.path.isfile(path):
        raise CheckpointError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable rnnt checkpoint ({type(e).__name__}); "
                              "pass a .pt file written by cli.train") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnnt checkpoint (no '{FORMAT}' marker)")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload['version']}; this code reads <= {VERSION}")
    try:
        tokenizer = Tokenizer(payload["tokenizer"])
        if hashlib.sha1(tokenizer.model_proto).hexdigest() != payload["tokenizer_sha1"]:
            raise CheckpointError(f"{path}: tokenizer hash mismatch (corrupt file)")
        return Checkpoint(
            model_config=from_dict(ModelConfig, payload["model_config"]),
            feature_config=from_dict(FeatureConfig, payload["feature_config"]),
            tokenizer=tokenizer, state_dict=payload["state_dict"], step=int(payload["step"]),
            flagfile=payload.get("flagfile", ""),
            train_config=from_dict(TrainConfig, payload["train_config"]) if payload.get("train_config") else None,
            augment_config=from_dict(AugmentConfig, payload["augment_config"]) if payload.get("augment_config") else None,
            optimizer=payload.get("optimizer"), extra=payload.get("extra") or {},
        )
    except RnntError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: checkpoint is incomplete or corrupt ({type(e).__name__}: {e})") from e


def load_model(path: str, device: str = "cpu") -> tuple[Transducer, Checkpoint]:
    """Rebuild the model from the file alone (float32, eval mode)."""
    ckpt = load(path)
    model = build_model(ckpt.model_config)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()})
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the stored model config: {str(e).splitlines()[0]}") from e
    return model.to(device).eval(), ckpt


def step_path(exp_dir: str, step: int) -> str:
    return os.path.join(exp_dir, f"ckpt-{step:08d}.pt")


def newest(exp_dir: str) -> str | None:
    """Path of the newest step checkpoint in ``exp_dir`` (None if there is none)."""
    paths = sorted(glob.glob(os.path.join(exp_dir, "ckpt-*.pt")))
    return paths[-1] if paths else None


def prune(exp_dir: str, keep: int) -> None:
    """Delete all but the ``keep`` newest step checkpoints."""
    paths = sorted(p for p in glob.glob(os.path.join(exp_dir, "ckpt-*.pt")) if re.search(r"ckpt-\d{8}\.pt$", p))
    for p in paths[:-keep]:
        os.remove(p)


