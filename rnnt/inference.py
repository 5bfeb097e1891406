"""Build a ``Recognizer`` from a model path: a torch checkpoint (.pt) or an exported ONNX folder.

torch is imported only for the torch backend, so the ONNX path runs with onnxruntime, numpy and
sentencepiece alone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

from rnnt.config import DecodingConfig, EndpointConfig
from rnnt.errors import CheckpointError, ConfigError
from rnnt.session import Recognizer

LM_FILE = "lm.npz"


def find_lm(model: str) -> str:
    """The language model that goes with ``model``: ``lm.npz`` beside a checkpoint, or in an export
    folder or one of its two parents (``models/en_small/onnx/int8`` finds ``models/en_small/lm.npz``)."""
    model = os.path.abspath(model)
    folders = [model, os.path.dirname(model), os.path.dirname(os.path.dirname(model))] if os.path.isdir(model) \
        else [os.path.dirname(model)]
    for folder in folders:
        if os.path.isfile(os.path.join(folder, LM_FILE)):
            return os.path.join(folder, LM_FILE)
    return ""


def resolve_lm(path: str, decoding: DecodingConfig | None, tokenizer_sha1: str, vocab_size: int) -> DecodingConfig:
    """Replace ``lm="auto"`` by the model's language model, or by none when it has none or it was built
    for another tokenizer (a warning; an explicit ``--lm`` that does not fit is an error instead)."""
    decoding = decoding or DecodingConfig()
    if decoding.lm != "auto":
        return decoding
    found = find_lm(path)
    if found:
        from rnnt.lm import NgramLM

        try:
            NgramLM.check_header(found, tokenizer_sha1, vocab_size)
        except CheckpointError as e:
            logging.warning("not using %s: %s", found, e)
            found = ""
    return replace(decoding, lm=found)


def load_recognizer(path: str, backend: str = "torch", threads: int = 1, decoding: DecodingConfig | None = None,
                    endpoint: EndpointConfig | None = None) -> Recognizer:
    """``backend`` "torch" needs a checkpoint file; "onnx" an export folder (or a checkpoint beside one)."""
    if backend == "torch":
        if os.path.isdir(path):
            raise CheckpointError(f"{path} is a folder; the torch backend needs a .pt checkpoint "
                                  "(use --backend onnx for an exported folder)")
        from rnnt.backend import TorchBackend
        from rnnt.checkpoint import load_model

        model, ckpt = load_model(path)
        decoding = resolve_lm(path, decoding, ckpt.tokenizer.sha1, model.cfg.vocab_size)
        return Recognizer(TorchBackend(model, ckpt.feature_config, threads), ckpt.tokenizer, decoding, endpoint)
    if backend == "onnx":
        from rnnt.onnx_backend import OnnxBackend

        be = OnnxBackend.from_dir(path, threads=threads)
        decoding = resolve_lm(path, decoding, be.tokenizer.sha1, be.model_config.vocab_size)
        return Recognizer(be, be.tokenizer, decoding, endpoint)
    raise ConfigError(f"unknown backend {backend!r}; use torch or onnx")
