"""Build a ``Recognizer`` from a model path: a torch checkpoint (.pt) or an exported ONNX folder.

torch is imported only for the torch backend, so the ONNX path runs with onnxruntime, numpy and
sentencepiece alone.
"""

from __future__ import annotations

import os

from rnnt.config import DecodingConfig, EndpointConfig
from rnnt.errors import CheckpointError, ConfigError
from rnnt.session import Recognizer


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
        return Recognizer(TorchBackend(model, ckpt.feature_config, threads), ckpt.tokenizer, decoding, endpoint)
    if backend == "onnx":
        from rnnt.onnx_backend import OnnxBackend

        be = OnnxBackend.from_dir(path, threads=threads)
        return Recognizer(be, be.tokenizer, decoding, endpoint)
    raise ConfigError(f"unknown backend {backend!r}; use torch or onnx")
