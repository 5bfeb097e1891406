"""ONNX export: named graphs with metadata that pass onnx.checker, agree with torch, and quantize to int8."""

import json
import os
import subprocess
import sys

import onnx
import pytest

from export.onnx_export import export_onnx, quantize_int8, verify
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
    assert json.load(open(os.path.join(q, CONFIG_FILE)))["quantization"] == "int8-dynamic"
    for file in GRAPH_FILES.values():
        meta = {p.key: p.value for p in onnx.load(os.path.join(q, file)).metadata_props}
        assert meta["quantization"] == "int8-dynamic"
        assert os.path.getsize(os.path.join(q, file)) < os.path.getsize(tmp_path / file)
    model, _ = load_model(random_model)
    assert verify(model, q, tolerance=None).worst < 0.1


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


def test_export_cli_one_line_error(tmp_path):
    proc = _cli(f"--model={tmp_path / 'missing.pt'}", f"--out={tmp_path / 'o'}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: model file not found")
