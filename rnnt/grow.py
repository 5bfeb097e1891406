"""Deepen a trained encoder without changing what it computes.

Each encoder block is ``x + dropout(LSTM(LayerNorm(x)))``. A new block whose LSTM has zero weights and
biases on its cell-input gate (``g``) always has ``c = 0`` and so ``h = 0``: the block is the identity,
and the grown model gives exactly the tokens of the old one. Its other gates keep PyTorch's random init,
and the ``g`` rows get gradients from the first step, so training grows the block from there.
"""

from __future__ import annotations

import dataclasses

import torch

from rnnt.checkpoint import Checkpoint
from rnnt.errors import ConfigError


def _block_keys(i: int) -> list[str]:
    lstm = f"encoder.lstms.{i}."
    return [f"encoder.norms.{i}.weight", f"encoder.norms.{i}.bias", lstm + "weight_ih_l0", lstm + "weight_hh_l0",
            lstm + "bias_ih_l0", lstm + "bias_hh_l0"]


def identity_block(hidden: int, seed: int) -> list[torch.Tensor]:
    """The parameters of one identity encoder block, in ``_block_keys`` order."""
    gen = torch.Generator().manual_seed(seed)
    bound = hidden ** -0.5  # PyTorch's LSTM init: U(-1/sqrt(H), 1/sqrt(H))
    lstm = []
    for shape in ((4 * hidden, hidden), (4 * hidden, hidden), (4 * hidden,), (4 * hidden,)):  # W_ih, W_hh, b_ih, b_hh
        t = (torch.rand(shape, generator=gen) * 2 - 1) * bound
        t[2 * hidden : 3 * hidden] = 0.0  # gate order i, f, g, o: g = 0 keeps the cell, and so h, at 0
        lstm.append(t)
    return [torch.ones(hidden), torch.zeros(hidden), *lstm]


def grow_encoder(ckpt: Checkpoint, add_layers: int, position: int | None = None, seed: int = 0) -> Checkpoint:
    """``ckpt`` with ``add_layers`` identity blocks inserted before encoder block ``position`` (default: on
    top). Weights keep their dtype; training-only heads and everything outside the encoder stay as they are."""
    cfg = ckpt.model_config
    old = cfg.enc_layers
    position = old if position is None else position
    if add_layers < 1:
        raise ConfigError(f"add_layers must be >= 1, got {add_layers}")
    if not 0 <= position <= old:
        raise ConfigError(f"position must be in [0, {old}] for a {old}-layer encoder, got {position}")
    sd = ckpt.state_dict
    dtype = sd["encoder.lstms.0.weight_ih_l0"].dtype
    new_sd = {k: v for k, v in sd.items() if not k.startswith(("encoder.norms.", "encoder.lstms."))}
    order = list(range(position)) + [None] * add_layers + list(range(position, old))
    for new_i, old_i in enumerate(order):
        if old_i is None:
            values = [t.to(dtype) for t in identity_block(cfg.enc_hidden, seed + new_i)]
        else:
            values = [sd[k] for k in _block_keys(old_i)]
        new_sd.update(zip(_block_keys(new_i), values))
    grown = dataclasses.replace(cfg, enc_layers=old + add_layers)
    extra = {**(ckpt.extra if isinstance(ckpt.extra, dict) else {}),
             "grown": {"from_layers": old, "added": add_layers, "position": position}}
    return dataclasses.replace(ckpt, model_config=grown, state_dict=new_sd, optimizer=None, extra=extra)
