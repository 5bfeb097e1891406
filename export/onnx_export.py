"""ONNX export: graph wrappers, export with fixed names and metadata, int8 quantization and ``verify``.

Legend: N streams (batch), T_in feature frames, F mel bins, S stack factor, T = T_in // S encoder frames,
L layers, H hidden width, J joint width, V vocabulary with blank (id 0).

The folder layout, the input and output names and their shapes are defined in ``rnnt/onnx_backend.py``
(the reader); this module writes what it reads. Like icefall's ``export-onnx.py``, the joiner's input
projections move into the encoder and predictor graphs, so a search step costs only add, tanh, linear.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from rnnt.config import DecodingConfig, FeatureConfig, to_dict
from rnnt.errors import ExportError
from rnnt.onnx_backend import (CONFIG_FILE, DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS, FORMAT,
                               GRAPH_FILES, INT8_DIR, JOINT_INPUTS, JOINT_OUTPUTS, TOKENIZER_FILE, VERSION, OnnxBackend,
                               read_folder_config)
from rnnt.state import LstmState
from rnnt.tokenizer import Tokenizer
from rnnt.transducer import Transducer

log = logging.getLogger(__name__)
OPSET = 18
# onnxruntime against torch, fp32, on random inputs: both run float32 kernels, so ~1e-6 is typical.
FP32_TOLERANCE = 1e-4
# Dynamic int8 for every weight matrix: the LSTMs carry most of the compute. ("MatMul", "Gemm") alone
# keeps the LSTMs in float (about as accurate on random inputs, slower).
INT8_OPS = ("MatMul", "Gemm", "LSTM")
# int8 weights use 7 bits (-64..63) by default. On x86 CPUs without VNNI (AVX2 only: Zen 2/3, Haswell to
# Skylake) onnxruntime multiplies uint8 activations by int8 weights with vpmaddubsw, which saturates
# two adjacent products at 16 bits when weights use the full 8 bits: the tiny test model then drifted
# 0.55 from torch there against 0.02 on a VNNI CPU. With 7 bits the sums fit, so every x86 CPU computes
# the same outputs.
INT8_REDUCE_RANGE = True
# One scale per output channel (row of a weight matrix, gate row of an LSTM) instead of one per tensor:
# the shipped 14-layer model lost 0.82 points of greedy WER on the test set to per-tensor int8 (40.93% ->
# 41.75%) and none per channel (40.68%), at the same speed (twenty-ninth session, see its model card).
INT8_PER_CHANNEL = True


class EncoderGraph(nn.Module):
    """``Encoder.forward`` (normalisation, stacking, LSTMs) plus the joiner's encoder projection."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.encoder, self.joiner = model.encoder, model.joiner

    def forward(self, features: torch.Tensor, h: torch.Tensor, c: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features (N, T_in, F), h and c (L, N, H) -> encoder_out (N, T, J), next_h, next_c (L, N, H)."""
        lengths = torch.zeros(features.shape[0], dtype=torch.long)  # out_lengths is unused and pruned
        out, _, state = self.encoder(features, lengths, LstmState(h, c))  # (N, T, D_enc)
        return self.joiner.project_encoder(out), state.h, state.c


class PredictorGraph(nn.Module):
    """``Predictor.forward`` for one token per stream plus the joiner's predictor projection."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.predictor, self.joiner = model.predictor, model.joiner

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """token (N,) int64, h and c (L, N, H) -> predictor_out (N, J), next_h, next_c (L, N, H)."""
        out, state = self.predictor(token.unsqueeze(1), LstmState(h, c))  # (N, 1, D_pred)
        return self.joiner.project_predictor(out.squeeze(1)), state.h, state.c


class JointGraph(nn.Module):
    """Add, tanh, output layer and log-softmax over projected inputs."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.joiner = model.joiner

    def forward(self, encoder_out: torch.Tensor, predictor_out: torch.Tensor) -> torch.Tensor:
        """encoder_out (N, J), predictor_out (N, J) -> log_probs (N, V)."""
        return torch.log_softmax(self.joiner.join_projected(encoder_out, predictor_out), dim=-1)


def _example_inputs(model: Transducer, n: int, t_in: int, rng: np.random.Generator) -> dict[str, dict]:
    """Random inputs per graph, keyed by input name (numpy float32 / int64)."""
    c = model.cfg
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    feats = f32(n, t_in, c.n_mels) * model.encoder.feat_std.numpy() + model.encoder.feat_mean.numpy()
    return {
        "encoder": {"features": feats.astype(np.float32), "h": f32(c.enc_layers, n, c.enc_hidden),
                    "c": f32(c.enc_layers, n, c.enc_hidden)},
        "decoder": {"token": rng.integers(0, c.vocab_size, n).astype(np.int64),
                    "h": f32(c.pred_layers, n, c.pred_hidden), "c": f32(c.pred_layers, n, c.pred_hidden)},
        "joint": {"encoder_out": f32(n, c.joint_dim), "predictor_out": f32(n, c.joint_dim)},
    }


def _graphs(model: Transducer) -> dict[str, tuple[nn.Module, tuple[str, ...], tuple[str, ...], dict]]:
    """name -> (wrapper, input names, output names, dynamic axes)."""
    n = {0: "N"}
    state = {1: "N"}
    return {
        "encoder": (EncoderGraph(model), ENCODER_INPUTS, ENCODER_OUTPUTS,
                    {"features": {0: "N", 1: "T_in"}, "h": state, "c": state,
                     "encoder_out": {0: "N", 1: "T"}, "next_h": state, "next_c": state}),
        "decoder": (PredictorGraph(model), DECODER_INPUTS, DECODER_OUTPUTS,
                    {"token": n, "h": state, "c": state, "predictor_out": n, "next_h": state, "next_c": state}),
        "joint": (JointGraph(model), JOINT_INPUTS, JOINT_OUTPUTS,
                  {"encoder_out": n, "predictor_out": n, "log_probs": n}),
    }


# Float initializers with at least this many elements are stored as fp16 when that is exact (see store_fp16).
FP16_MIN_ELEMENTS = 1024
FP16_SUFFIX = "__fp16"


def store_fp16(path: str, min_elements: int = FP16_MIN_ELEMENTS) -> int:
    """Store each float32 initializer of ``path`` that fp16 holds exactly (a model packaged with fp16 weights)
    as fp16, read back through a ``Cast`` to float32: the file shrinks by about half and every number the
    graph computes stays the same (onnxruntime folds the casts when it loads the graph). Returns how many
    initializers moved; ``restore_fp32`` undoes it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(path)
    g = m.graph
    graph_inputs = {i.name for i in g.input}
    casts, kept = [], []
    for init in g.initializer:
        arr = numpy_helper.to_array(init) if init.data_type == TensorProto.FLOAT else None
        if (arr is None or arr.size < min_elements or init.name in graph_inputs
                or not np.array_equal(arr.astype(np.float16).astype(np.float32), arr)):
            kept.append(init)
            continue
        kept.append(numpy_helper.from_array(arr.astype(np.float16), init.name + FP16_SUFFIX))
        casts.append(helper.make_node("Cast", [init.name + FP16_SUFFIX], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "_to_fp32"))
    if casts:
        del g.initializer[:]
        g.initializer.extend(kept)
        nodes = casts + list(g.node)
        del g.node[:]
        g.node.extend(nodes)
        onnx.save(m, path)
    return len(casts)


def restore_fp32(src: str, dst: str) -> None:
    """Write ``src`` to ``dst`` with the initializers ``store_fp16`` moved back to float32 and their casts
    gone, e.g. for a tool (the int8 quantizer) that looks for weights as plain float initializers."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(src)
    g = m.graph
    half = {i.name: i for i in g.initializer if i.name.endswith(FP16_SUFFIX)}
    is_cast = [n.op_type == "Cast" and len(n.input) == 1 and n.input[0] in half for n in g.node]
    inits = [i for i in g.initializer if i.name not in half]
    inits += [numpy_helper.from_array(numpy_helper.to_array(half[n.input[0]]).astype(np.float32), n.output[0])
              for n, cast in zip(g.node, is_cast) if cast]
    nodes = [n for n, cast in zip(g.node, is_cast) if not cast]
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(m, dst)


def _metadata(folder_cfg: dict, graph: str) -> dict[str, str]:
    """Everything inference needs, as ONNX ``metadata_props`` strings (icefall style)."""
    mc, fc = folder_cfg["model_config"], folder_cfg["feature_config"]
    meta = {"model_type": "rnnt-lstm-transducer", "format": FORMAT, "version": str(VERSION), "graph": graph,
            "model_config": json.dumps(mc, sort_keys=True), "feature_config": json.dumps(fc, sort_keys=True),
            "quantization": folder_cfg["quantization"], "weights": folder_cfg.get("weights", "fp32"),
            "chunk_frames": str(folder_cfg["chunk_frames"]),
            "frame_shift_ms": str(1000 * mc["stack"] * fc["hop_length"] / fc["sample_rate"]),
            "tokenizer_sha1": folder_cfg["tokenizer_sha1"], "blank_id": "0"}
    for k in ("vocab_size", "n_mels", "stack", "enc_layers", "enc_hidden", "pred_layers", "pred_hidden", "joint_dim"):
        meta[k] = str(mc[k])
    return meta


def add_metadata(path: str, meta: dict[str, str]) -> None:
    """Replace the ``metadata_props`` of the ONNX file at ``path``."""
    import onnx

    m = onnx.load(path)
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, path)


def _check(path: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(path, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected {path}: {str(e).splitlines()[0]}") from e


def _write_folder_config(out_dir: str, cfg: dict) -> None:
    with open(os.path.join(out_dir, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1, sort_keys=True)


def export_onnx(model: Transducer, feature_config: FeatureConfig, tokenizer: Tokenizer, out_dir: str,
                chunk_frames: int = DecodingConfig().chunk_frames, opset: int = OPSET,
                source: dict | None = None, weights: str = "auto") -> dict:
    """Write the three graphs, the tokenizer and ``config.json`` to ``out_dir``; check each graph.

    Returns the folder config (also written as ``config.json``). ``source`` (e.g. checkpoint path and
    step) is recorded in it. ``weights="auto"`` stores the weights fp16 holds exactly in fp16 (all of them
    for a model packaged by ``cli.package_model``; none for a training checkpoint), which changes no output;
    ``"fp32"`` keeps every weight in float32. The config's ``weights`` says "fp16" when any moved.
    """
    if weights not in ("auto", "fp32"):
        raise ExportError(f"weights must be auto or fp32, got {weights!r}")
    model = model.float().cpu().eval()
    os.makedirs(out_dir, exist_ok=True)
    folder_cfg = {"format": FORMAT, "version": VERSION, "model_config": to_dict(model.cfg),
                  "feature_config": to_dict(feature_config), "chunk_frames": chunk_frames, "quantization": "none",
                  "opset": opset, "files": dict(GRAPH_FILES), "tokenizer": TOKENIZER_FILE,
                  "tokenizer_sha1": tokenizer.sha1, "source": source or {}}
    examples = _example_inputs(model, 1, 2 * chunk_frames * model.cfg.stack, np.random.default_rng(0))
    moved = 0  # initializers store_fp16 moved, over the three graphs
    for name, (wrapper, inputs, outputs, axes) in _graphs(model).items():
        path = os.path.join(out_dir, GRAPH_FILES[name])
        args = tuple(torch.from_numpy(examples[name][k]) for k in inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about the shape asserts; verify() checks the result
            try:
                torch.onnx.export(wrapper, args, path, input_names=list(inputs), output_names=list(outputs),
                                  dynamic_axes=axes, opset_version=opset, dynamo=False)
            except Exception as e:
                raise ExportError(f"torch.onnx.export failed for the {name} graph: {type(e).__name__}: {e}") from e
        moved += store_fp16(path) if weights == "auto" else 0
    folder_cfg["weights"] = "fp16" if moved else "fp32"
    for name in GRAPH_FILES:  # after every graph, so each one's metadata says the folder's weights
        path = os.path.join(out_dir, GRAPH_FILES[name])
        add_metadata(path, _metadata(folder_cfg, name))
        _check(path)
    with open(os.path.join(out_dir, TOKENIZER_FILE), "wb") as f:
        f.write(tokenizer.model_proto)
    _write_folder_config(out_dir, folder_cfg)
    log.info("exported %s (opset %d)", out_dir, opset)
    return folder_cfg


def quantize_int8(fp32_dir: str, out_dir: str | None = None, op_types: tuple[str, ...] = INT8_OPS,
                  reduce_range: bool = INT8_REDUCE_RANGE, per_channel: bool = INT8_PER_CHANNEL) -> str:
    """Dynamic int8 quantization (onnxruntime.quantization) of an export folder; returns the new folder.

    Weights of the ``op_types`` nodes become int8 and their activations are quantized on the fly
    (``LSTM`` becomes com.microsoft ``DynamicQuantizeLSTM``, ``MatMul`` becomes ``MatMulInteger``); the
    embedding (Gather), LayerNorm and the rest stay float. ``out_dir`` defaults to ``fp32_dir/int8``.
    ``reduce_range`` keeps weights to 7 bits so CPUs without VNNI do not saturate (``INT8_REDUCE_RANGE``);
    ``per_channel`` gives each output channel its own scale (``INT8_PER_CHANNEL``).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir = out_dir or os.path.join(fp32_dir, INT8_DIR)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(fp32_dir, CONFIG_FILE), encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["quantization"] = "int8-dynamic"
    cfg["int8_weight_bits"] = 7 if reduce_range else 8
    cfg["int8_per_channel"] = per_channel
    fp16 = cfg.get("weights", "fp32") == "fp16"
    cfg["weights"] = "fp32"  # what int8 leaves in float (LayerNorm, embedding) is small
    for name, file in cfg["files"].items():
        src, dst = os.path.join(fp32_dir, file), os.path.join(out_dir, file)
        logging.disable(logging.WARNING)  # the quantizer logs every tensor it leaves alone to the root logger
        try:
            with tempfile.TemporaryDirectory() as tmp:
                plain = src
                if fp16:  # the quantizer finds weights only as float32 initializers
                    plain = os.path.join(tmp, file)
                    restore_fp32(src, plain)
                quantize_dynamic(plain, dst, weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types),
                                 reduce_range=reduce_range, per_channel=per_channel)
        except Exception as e:
            raise ExportError(f"int8 quantization of {src} failed: {type(e).__name__}: {e}") from e
        finally:
            logging.disable(logging.NOTSET)
        add_metadata(dst, _metadata(cfg, name))
        _check(dst)
    shutil.copyfile(os.path.join(fp32_dir, cfg["tokenizer"]), os.path.join(out_dir, cfg["tokenizer"]))
    _write_folder_config(out_dir, cfg)
    log.info("quantized %s -> %s", fp32_dir, out_dir)
    return out_dir


@dataclass
class VerifyReport:
    """Largest absolute difference, onnxruntime against torch, per graph output."""

    max_abs_diff: dict[str, float] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values(), default=0.0)


def verify(model: Transducer, onnx_dir: str, tolerance: float | None = FP32_TOLERANCE, trials: int = 3,
           seed: int = 0) -> VerifyReport:
    """Run each graph with onnxruntime and its torch wrapper on random inputs of several batch sizes and
    lengths; raise ``ExportError`` when a difference exceeds ``tolerance`` (None: only report)."""
    import onnxruntime as ort

    model = model.float().cpu().eval()
    OnnxBackend(onnx_dir, threads=1)  # the folder must load as a whole (names, configs, tokenizer)
    files = read_folder_config(onnx_dir)["files"]
    sessions = {name: ort.InferenceSession(os.path.join(onnx_dir, files[name]), providers=["CPUExecutionProvider"])
                for name in GRAPH_FILES}
    rng = np.random.default_rng(seed)
    report = VerifyReport()
    for trial in range(trials):
        n, t_in = 1 + trial, model.cfg.stack * (1 + 7 * trial)  # N = 1, 2, 3; T_in = S, 8 S, 15 S
        examples = _example_inputs(model, n, t_in, rng)
        for name, (wrapper, inputs, outputs, _) in _graphs(model).items():
            got = sessions[name].run(list(outputs), examples[name])
            with torch.inference_mode():
                want = wrapper(*(torch.from_numpy(examples[name][k]) for k in inputs))
            want = want if isinstance(want, tuple) else (want,)
            for out_name, g, w in zip(outputs, got, want):
                key = f"{name}.{out_name}"
                diff = float(np.abs(g - w.numpy()).max()) if g.size else 0.0
                report.max_abs_diff[key] = max(report.max_abs_diff.get(key, 0.0), diff)
    if tolerance is not None and report.worst > tolerance:
        bad = {k: v for k, v in report.max_abs_diff.items() if v > tolerance}
        raise ExportError(f"onnxruntime differs from torch by more than {tolerance:g} in {onnx_dir}: {bad}")
    return report


def compare_wer(checkpoint: str, folders: dict[str, str], manifest: str, limit: int = 0) -> dict[str, float]:
    """WER on ``manifest`` of the torch checkpoint ("torch fp32") and of each named export folder."""
    from rnnt.evaluation import evaluate_manifest
    from rnnt.inference import load_recognizer

    out = {"torch fp32": evaluate_manifest(load_recognizer(checkpoint, "torch", 1), manifest, limit).wer}
    for name, folder in folders.items():
        out[name] = evaluate_manifest(load_recognizer(folder, "onnx", 1), manifest, limit).wer
    return out
