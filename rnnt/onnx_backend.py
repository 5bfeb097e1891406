"""``OnnxBackend``: the ``Backend`` protocol on onnxruntime, configured from the export folder alone.

Legend: N streams (batch), T_in feature frames, F mel bins, S stack factor, T = T_in // S encoder frames,
L layers, H hidden width, J joint width, V vocabulary with blank (id 0).

Needs only onnxruntime, numpy and sentencepiece: never imports torch, ``export/`` or ``torch.onnx``.
Features come from ``rnnt.features.log_mel_np`` in the ``Stream``, so the torch and onnxruntime paths
see identical inputs.

An export folder (written by ``python -m export.export_onnx``) holds:

=================  ======================================================  ====================================
file               inputs                                                  outputs
=================  ======================================================  ====================================
``encoder.onnx``   ``features`` (N, T_in, F) float32, T_in a multiple of   ``encoder_out`` (N, T, J) float32,
                   S; ``h``, ``c`` (L_enc, N, H_enc) float32               ``next_h``, ``next_c`` (L_enc, N, H_enc)
``decoder.onnx``   ``token`` (N,) int64; ``h``, ``c`` (L_pred, N, H_pred)  ``predictor_out`` (N, J) float32,
                                                                           ``next_h``, ``next_c`` (L_pred, N, H_pred)
``joint.onnx``     ``encoder_out`` (N, J), ``predictor_out`` (N, J)        ``log_probs`` (N, V) float32
=================  ======================================================  ====================================

plus ``tokenizer.model`` (sentencepiece) and ``config.json`` (``FeatureConfig``, ``ModelConfig``, chunk
size, file names). The same configs are in every graph's ``metadata_props``. ``encoder.onnx`` includes
the feature normalisation, frame stacking and the joiner's encoder projection; ``decoder.onnx`` (the
predictor) includes the joiner's predictor projection; ``joint.onnx`` is add, tanh, linear, log-softmax.
An ``int8/`` subfolder, when exported with ``--int8``, is a complete folder of the same form.
"""

from __future__ import annotations

import json
import os

import numpy as np

from rnnt.config import FeatureConfig, ModelConfig, from_dict
from rnnt.errors import CheckpointError, ConfigError
from rnnt.state import LstmState, zero_state
from rnnt.tokenizer import Tokenizer

FORMAT = "rnnt-onnx"
VERSION = 1
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.model"
INT8_DIR = "int8"
GRAPH_FILES = {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "joint": "joint.onnx"}
ENCODER_INPUTS = ("features", "h", "c")
ENCODER_OUTPUTS = ("encoder_out", "next_h", "next_c")
DECODER_INPUTS = ("token", "h", "c")
DECODER_OUTPUTS = ("predictor_out", "next_h", "next_c")
JOINT_INPUTS = ("encoder_out", "predictor_out")
JOINT_OUTPUTS = ("log_probs",)


def read_folder_config(path: str) -> dict:
    """The parsed ``config.json`` of an export folder; a one-line ``CheckpointError`` when unusable."""
    cfg_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isdir(path):
        raise CheckpointError(f"ONNX model folder not found: {path}; export one with "
                              "python -m export.export_onnx --out DIR")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except OSError as e:
        raise CheckpointError(f"{path} has no readable {CONFIG_FILE} ({e.strerror}); it is not an export "
                              "folder of python -m export.export_onnx") from e
    except ValueError as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e}); export the model again") from e
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path} is not an rnnt ONNX export (no '{FORMAT}' marker)")
    if int(cfg.get("version", 0)) > VERSION:
        raise CheckpointError(f"{cfg_path} has format version {cfg['version']}; this code reads <= {VERSION}")
    return cfg


def _session_options(threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only
    # Worker threads that spin between runs would steal the core the Python search loop needs.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def _open_session(path: str, threads: int, names: tuple[tuple[str, ...], tuple[str, ...]]):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ConfigError("onnxruntime is not installed; pip install onnxruntime") from e
    if not os.path.isfile(path):
        raise CheckpointError(f"ONNX graph not found: {path}; export the model again with python -m export.export_onnx")
    try:
        sess = ort.InferenceSession(path, _session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types with C++ text
        raise CheckpointError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from e
    inputs = tuple(i.name for i in sess.get_inputs())
    outputs = tuple(o.name for o in sess.get_outputs())
    if (inputs, outputs) != names:
        raise CheckpointError(f"{path} has inputs {inputs} and outputs {outputs}, expected {names}; "
                              "export the model again with this version")
    return sess


class OnnxBackend:
    """Three onnxruntime sessions (encoder, predictor, joint); stateless like every backend.

    ``encode`` accepts any N, so several streams can share one encoder call (stack their states with
    ``rnnt.state.stack_states``).
    """

    def __init__(self, path: str, threads: int = 1) -> None:
        """``path``: an export folder (see the module docstring). ``threads``: onnxruntime intra-op threads
        (0: onnxruntime's default, one per physical core)."""
        if threads < 0:
            raise ConfigError(f"threads must be >= 0 for onnxruntime (0 = its default), got {threads}")
        cfg = read_folder_config(path)
        try:
            self.model_config: ModelConfig = from_dict(ModelConfig, cfg["model_config"])
            self.feature_config: FeatureConfig = from_dict(FeatureConfig, cfg["feature_config"])
            files = {k: os.path.join(path, cfg["files"][k]) for k in GRAPH_FILES}
            tok_path = os.path.join(path, cfg.get("tokenizer", TOKENIZER_FILE))
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{os.path.join(path, CONFIG_FILE)} is incomplete ({type(e).__name__}: {e}); "
                                  "export the model again") from e
        self.path = path
        self.threads = threads
        self.quantization: str = cfg.get("quantization", "none")
        self.chunk_frames: int = int(cfg.get("chunk_frames", 4))  # chunk the graphs were verified with
        self.tokenizer = Tokenizer.load(tok_path)
        if self.tokenizer.vocab_size != self.model_config.vocab_size:
            raise CheckpointError(f"{tok_path} has {self.tokenizer.vocab_size} ids but the model outputs "
                                  f"{self.model_config.vocab_size}; the folder mixes two exports")
        self._enc = _open_session(files["encoder"], threads, (ENCODER_INPUTS, ENCODER_OUTPUTS))
        self._dec = _open_session(files["decoder"], threads, (DECODER_INPUTS, DECODER_OUTPUTS))
        self._joint = _open_session(files["joint"], threads, (JOINT_INPUTS, JOINT_OUTPUTS))
        meta = self._enc.get_modelmeta().custom_metadata_map
        if json.loads(meta.get("model_config", "null")) != cfg["model_config"]:
            raise CheckpointError(f"{files['encoder']} was exported from a different model than "
                                  f"{os.path.join(path, CONFIG_FILE)} describes; export the model again")

    @classmethod
    def from_dir(cls, path: str, threads: int = 1, int8: bool = False) -> "OnnxBackend":
        """Open an export folder; ``int8`` picks its ``int8/`` subfolder (``--int8`` at export)."""
        if int8:
            sub = os.path.join(path, INT8_DIR)
            if not os.path.isdir(sub):
                raise CheckpointError(f"{path} has no {INT8_DIR}/ subfolder; export with --int8 to create it")
            path = sub
        return cls(path, threads)

    def init_encoder_state(self, batch_size: int = 1) -> LstmState:
        """Zero encoder state, h and c (L_enc, N, H_enc) float32."""
        return zero_state(self.model_config.enc_layers, batch_size, self.model_config.enc_hidden)

    def init_predictor_state(self, batch_size: int = 1) -> LstmState:
        """Zero predictor state, h and c (L_pred, N, H_pred) float32."""
        return zero_state(self.model_config.pred_layers, batch_size, self.model_config.pred_hidden)

    def encode(self, feats: np.ndarray, state: LstmState) -> tuple[np.ndarray, LstmState]:
        """feats (N, T_in, F) float32 -> (N, T, J) projected encoder output and the new state.

        Trailing frames that do not fill a stack step are dropped, as in ``Encoder.forward``.
        """
        assert feats.ndim == 3 and feats.shape[2] == self.model_config.n_mels, \
            f"feats must be (N, T_in, {self.model_config.n_mels}), got {feats.shape}"
        s = self.model_config.stack
        usable = feats.shape[1] // s * s
        out, h, c = self._enc.run(ENCODER_OUTPUTS, {
            "features": np.ascontiguousarray(feats[:, :usable], dtype=np.float32),
            "h": np.ascontiguousarray(state.h, dtype=np.float32), "c": np.ascontiguousarray(state.c, dtype=np.float32)})
        return out, LstmState(h, c)

    def predict(self, tokens: np.ndarray, state: LstmState) -> tuple[np.ndarray, LstmState]:
        """tokens (N,) int64 -> (N, J) projected predictor output and the new state."""
        out, h, c = self._dec.run(DECODER_OUTPUTS, {
            "token": np.ascontiguousarray(tokens, dtype=np.int64),
            "h": np.ascontiguousarray(state.h, dtype=np.float32), "c": np.ascontiguousarray(state.c, dtype=np.float32)})
        return out, LstmState(h, c)

    def join(self, enc: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """enc (N, J), pred (N, J) -> log-probabilities (N, V) (logits up to a per-row constant)."""
        return self._joint.run(JOINT_OUTPUTS, {"encoder_out": np.ascontiguousarray(enc, dtype=np.float32),
                                               "predictor_out": np.ascontiguousarray(pred, dtype=np.float32)})[0]
