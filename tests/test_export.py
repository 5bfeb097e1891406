"""ONNX export: named graphs with metadata that pass onnx.checker, agree with torch, and quantize to int8."""

import json
import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from export.onnx_export import _example_inputs, export_onnx, quantize_int8, verify
from rnnt.checkpoint import load_model
from rnnt.errors import ExportError
from rnnt.onnx_backend import (CONFIG_FILE, DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS,
                               GRAPH_FILES, JOINT_INPUTS, JOINT_OUTPUTS, TOKENIZER_FILE)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _export(ckpt_path: str, out: str) -> dict:
    model, ckpt = load_model(ckpt_path)
    return export_onnx(model, ckpt.feature_config, ckpt.tokenizer, out)


def test_graphs_are_named_checked_and_carry_metadata(random_model, tmp_path):
    cfg = _export(random_model, str(tmp_path))
    names = {"encoder": (ENCODER_INPUTS, ENCODER_OUTPUTS), "decoder": (DECODER_INPUTS, DECODER_OUTPUTS),
             "joint": (JOINT_INPUTS, JOINT_OUTPUTS)}
    for graph, file in GRAPH_FILES.items():
        m = onnx.load(str(tmp_path / file))
        onnx.checker.check_model(m, full_check=True)
        assert tuple(i.name for i in m.graph.input) == names[graph][0]
        assert tuple(o.name for o in m.graph.output) == names[graph][1]
        assert m.opset_import[0].version >= 17
        meta = {p.key: p.value for p in m.metadata_props}
        assert meta["graph"] == graph and json.loads(meta["model_config"]) == cfg["model_config"]
        assert json.loads(meta["feature_config"]) == cfg["feature_config"]
        assert int(meta["stack"]) == cfg["model_config"]["stack"] and meta["chunk_frames"] == "4"
    enc = onnx.load(str(tmp_path / GRAPH_FILES["encoder"]))
    time_dim = enc.graph.input[0].type.tensor_type.shape.dim[1]
    assert time_dim.dim_param == "T_in"  # dynamic time axis
    assert os.path.isfile(tmp_path / TOKENIZER_FILE)
    assert json.load(open(tmp_path / CONFIG_FILE))["quantization"] == "none"


@pytest.mark.parametrize("which", ["tiny_model", "random_model"])
def test_onnxruntime_matches_torch_on_random_inputs(which, request, tmp_path):
    path = request.getfixturevalue(which)
    _export(path, str(tmp_path))
    model, _ = load_model(path)
    report = verify(model, str(tmp_path), trials=3)
    assert report.worst < 1e-4, report.max_abs_diff
    assert set(report.max_abs_diff) == {f"{g}.{o}" for g, o in [("encoder", "encoder_out"), ("encoder", "next_h"),
                                        ("encoder", "next_c"), ("decoder", "predictor_out"), ("decoder", "next_h"),
                                        ("decoder", "next_c"), ("joint", "log_probs")]}


def test_verify_raises_on_a_wrong_model(random_model, tmp_path):
    _export(random_model, str(tmp_path))
    other, _ = load_model(random_model)
    for p in other.parameters():
        p.data.add_(0.1)
    with pytest.raises(ExportError, match="differs from torch"):
        verify(other, str(tmp_path))


def test_int8_folder_is_complete_and_close(random_model, tmp_path):
    _export(random_model, str(tmp_path))
    q = quantize_int8(str(tmp_path))
    assert q == str(tmp_path / "int8")
    ops = {n.op_type for n in onnx.load(os.path.join(q, GRAPH_FILES["encoder"])).graph.node}
    assert "DynamicQuantizeLSTM" in ops and "MatMulInteger" in ops
    cfg = json.load(open(os.path.join(q, CONFIG_FILE)))
    assert cfg["quantization"] == "int8-dynamic" and cfg["int8_weight_bits"] == 7 and cfg["int8_per_channel"]
    for file in GRAPH_FILES.values():
        meta = {p.key: p.value for p in onnx.load(os.path.join(q, file)).metadata_props}
        assert meta["quantization"] == "int8-dynamic"
        assert os.path.getsize(os.path.join(q, file)) < os.path.getsize(tmp_path / file)
    model, _ = load_model(random_model)
    assert verify(model, q, tolerance=None).worst < 0.1


def _weight_scales(folder: str) -> dict:
    """Sizes of the int8 weight scales in the encoder graph, by the quantized op that reads the weight."""
    from onnx import numpy_helper

    graph = onnx.load(os.path.join(folder, GRAPH_FILES["encoder"])).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    sizes = {}
    for node in graph.node:
        if node.op_type in ("MatMulInteger", "DynamicQuantizeLSTM") and node.input[1] in inits:
            scale = inits[node.input[1].replace("_quantized", "_scale")]  # the quantizer's naming
            sizes.setdefault(node.op_type, []).append(scale.size)
    return sizes


def test_int8_weights_have_one_scale_per_output_channel(random_model, tmp_path):
    _export(random_model, str(tmp_path))
    per_channel = _weight_scales(quantize_int8(str(tmp_path), str(tmp_path / "pc")))
    per_tensor = _weight_scales(quantize_int8(str(tmp_path), str(tmp_path / "pt"), per_channel=False))
    assert set(per_channel) == {"MatMulInteger", "DynamicQuantizeLSTM"} == set(per_tensor)
    assert all(n == 1 for sizes in per_tensor.values() for n in sizes)
    # an LSTM weight (directions, 4 * hidden, input) gets one scale per gate row of each direction
    assert all(n > 1 for sizes in per_channel.values() for n in sizes), per_channel
    lstm = per_channel["DynamicQuantizeLSTM"]
    assert all(n % 4 == 0 for n in lstm), lstm


def _run_all(folder: str, examples: dict) -> dict:
    import onnxruntime as ort

    out = {}
    for graph, file in GRAPH_FILES.items():
        sess = ort.InferenceSession(os.path.join(folder, file), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        out.update({f"{graph}.{n}": v for n, v in zip(names, sess.run(names, examples[graph]))})
    return out


def test_fp16_weights_halve_a_packaged_model_and_change_no_output(random_model, tmp_path):
    from rnnt import checkpoint

    from export.onnx_export import restore_fp32

    packaged = str(tmp_path / "packaged.pt")  # fp16 weights, as cli.package_model writes
    checkpoint.save(packaged, checkpoint.load(random_model), half=True)
    model, ckpt = load_model(packaged)
    auto, plain = tmp_path / "auto", tmp_path / "plain"
    assert export_onnx(model, ckpt.feature_config, ckpt.tokenizer, str(auto))["weights"] == "fp16"
    assert export_onnx(model, ckpt.feature_config, ckpt.tokenizer, str(plain), weights="fp32")["weights"] == "fp32"
    enc = GRAPH_FILES["encoder"]
    assert os.path.getsize(auto / enc) < 0.6 * os.path.getsize(plain / enc)
    meta = {p.key: p.value for p in onnx.load(str(auto / enc)).metadata_props}
    assert meta["weights"] == "fp16" and json.load(open(auto / CONFIG_FILE))["weights"] == "fp16"
    examples = _example_inputs(model, 2, 5 * model.cfg.stack, np.random.default_rng(3))
    got, want = _run_all(str(auto), examples), _run_all(str(plain), examples)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert verify(model, str(auto)).worst < 1e-4
    # restore_fp32 gives back the plain graph's weights, and int8 from either folder computes the same
    restore_fp32(str(auto / enc), str(tmp_path / "restored.onnx"))
    weights = lambda p: {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(p).graph.initializer}  # noqa: E731
    restored, original = weights(str(tmp_path / "restored.onnx")), weights(str(plain / enc))
    assert restored.keys() == original.keys() and all(np.array_equal(restored[k], original[k]) for k in original)
    q_auto, q_plain = quantize_int8(str(auto)), quantize_int8(str(plain))
    got, want = _run_all(q_auto, examples), _run_all(q_plain, examples)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert json.load(open(os.path.join(q_auto, CONFIG_FILE)))["weights"] == "fp32"
    # a training checkpoint (fp32 weights that fp16 does not hold) keeps them all in float32
    model32, ck32 = load_model(random_model)
    assert export_onnx(model32, ck32.feature_config, ck32.tokenizer, str(tmp_path / "t"))["weights"] == "fp32"
    with pytest.raises(ExportError, match="weights must be"):
        export_onnx(model32, ck32.feature_config, ck32.tokenizer, str(tmp_path / "u"), weights="fp8")


# Runs the three graphs of an export folder on saved inputs ("graph|input" in an .npz) and saves their
# outputs ("graph|output"), with the CPU features numpy detected.
_RUN_GRAPHS = """
import sys, numpy as np, onnxruntime as ort
from rnnt.onnx_backend import GRAPH_FILES
folder, inputs, out = sys.argv[1:4]
data, got = dict(np.load(inputs)), {}
for graph, file in GRAPH_FILES.items():
    sess = ort.InferenceSession(f"{folder}/{file}", providers=["CPUExecutionProvider"])
    feeds = {k.split("|")[1]: v for k, v in data.items() if k.startswith(graph + "|")}
    names = [o.name for o in sess.get_outputs()]
    got.update({f"{graph}|{n}": v for n, v in zip(names, sess.run(names, feeds))})
np.savez(out, **got)
features = np._core._multiarray_umath.__cpu_features__
print("AVX2", features["AVX2"], "AVX512VNNI", features["AVX512VNNI"])
"""
QEMU = shutil.which("qemu-x86_64")


@pytest.mark.skipif(platform.machine() != "x86_64" or QEMU is None, reason="needs an x86-64 host and qemu-user")
def test_int8_computes_the_same_on_a_cpu_without_vnni(random_model, tmp_path):
    """The int8 folder, run here and on an emulated AMD EPYC Rome (AVX2, no VNNI, where full-range int8
    weights saturate), gives the same numbers, close to torch."""
    _export(random_model, str(tmp_path))
    q = quantize_int8(str(tmp_path))
    model, _ = load_model(random_model)
    examples = _example_inputs(model, 2, 8 * model.cfg.stack, np.random.default_rng(0))
    np.savez(tmp_path / "in.npz", **{f"{g}|{k}": v for g, feeds in examples.items() for k, v in feeds.items()})
    script, env = str(tmp_path / "run_graphs.py"), {**os.environ, "PYTHONPATH": REPO}
    with open(script, "w") as f:
        f.write(_RUN_GRAPHS)
    runs = {}
    for name, prefix in [("host", []), ("epyc-rome", [QEMU, "-cpu", "EPYC-Rome"])]:
        out = str(tmp_path / f"{name}.npz")
        proc = subprocess.run([*prefix, sys.executable, script, q, str(tmp_path / "in.npz"), out], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = (proc.stdout.split(), dict(np.load(out)))
    assert runs["epyc-rome"][0] == ["AVX2", "True", "AVX512VNNI", "False"]
    host, emulated = runs["host"][1], runs["epyc-rome"][1]
    assert set(host) == set(emulated) and len(host) == 7
    for key in host:
        assert np.abs(host[key] - emulated[key]).max() < 1e-5, key
    report = verify(model, q, tolerance=None)
    assert report.worst < 0.1, report.max_abs_diff


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export.export_onnx", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_export_cli_with_int8_and_wer(tiny_model, tiny_corpus, tmp_path):
    out = tmp_path / "onnx"
    proc = _cli(f"--model={tiny_model}", f"--out={out}", "--int8", f"--manifest={tiny_corpus}", "--limit=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "onnx.checker passed" in proc.stdout
    wers = {line.split()[1] + " " + line.split()[2]: line.split()[3] for line in proc.stdout.splitlines()
            if line.startswith("WER")}
    assert set(wers) == {"torch fp32", "onnx fp32", "onnx int8"}
    assert wers["torch fp32"] == wers["onnx fp32"]
    assert os.path.isfile(out / "int8" / GRAPH_FILES["encoder"])
    assert json.load(open(out / "int8" / CONFIG_FILE))["int8_per_channel"] is True


def test_export_cli_one_line_error(tmp_path):
    proc = _cli(f"--model={tmp_path / 'missing.pt'}", f"--out={tmp_path / 'o'}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: model file not found")
