"""Export a checkpoint to ONNX: ``python -m export.export_onnx [--model M] --out DIR [--int8] [--manifest M]``.

Writes ``encoder.onnx``, ``decoder.onnx`` (the predictor), ``joint.onnx``, ``tokenizer.model`` and
``config.json`` to ``--out`` (the weights fp16 holds exactly, as a packaged model's, stored as fp16),
checks them with ``onnx.checker`` and compares onnxruntime with torch on random inputs. ``--int8`` adds a
dynamically quantized copy in ``--out/int8``; with ``--manifest`` the WER of torch, onnxruntime fp32 and
int8 on it is printed side by side.
"""

import os

from absl import flags as absl_flags

from cli import flags
from cli.common import model_path, run
from rnnt.config import DecodingConfig

absl_flags.DEFINE_string("out", None, "output folder for the ONNX graphs, tokenizer and config.json")
absl_flags.DEFINE_bool("int8", False, "also write a dynamically quantized int8 copy to OUT/int8")
absl_flags.DEFINE_list("int8_ops", ["MatMul", "Gemm", "LSTM"], "ONNX op types whose weights --int8 quantizes "
                       "(MatMul,Gemm keeps the LSTMs in float)")
absl_flags.DEFINE_bool("int8_per_channel", True, "--int8 gives each output channel of a weight its own scale "
                       "(--noint8_per_channel: one scale per tensor, as before the twenty-ninth session, "
                       "which cost the 14-layer model 0.8 points of WER)")
absl_flags.DEFINE_integer("opset", 18, "ONNX opset version")
absl_flags.DEFINE_enum("weights", "auto", ["auto", "fp32"], "auto: store the weights that fp16 holds exactly "
                       "(all of a packaged model's) as fp16, half the file size and the same outputs; "
                       "fp32: keep every weight in float32")
absl_flags.DEFINE_string("manifest", "", "JSONL manifest to compare the WER of torch, onnx fp32 (and int8) on")
absl_flags.DEFINE_integer("limit", 0, "use only the first N utterances of --manifest (0 = all)")
flags.define(DecodingConfig, extra=("model",), only=["chunk_frames"])
absl_flags.mark_flag_as_required("out")


def main(argv: list[str]) -> int:
    from export.onnx_export import compare_wer, export_onnx, quantize_int8, verify
    from rnnt.checkpoint import load_model

    F = flags.FLAGS
    path = model_path(F.model, "torch")
    model, ckpt = load_model(path)
    cfg = export_onnx(model, ckpt.feature_config, ckpt.tokenizer, F.out, F.chunk_frames, F.opset,
                      source={"checkpoint": os.path.abspath(path), "step": ckpt.step}, weights=F.weights)
    print(f"exported {F.out} (opset {F.opset}, {cfg['weights']} weights); onnx.checker passed; "
          f"max |onnxruntime - torch| on random inputs: {verify(model, F.out).worst:.2e}")
    folders = {"onnx fp32": F.out}
    if F.int8:
        folders["onnx int8"] = quantize_int8(F.out, op_types=tuple(F.int8_ops), per_channel=F.int8_per_channel)
        print(f"int8: {folders['onnx int8']}; max |int8 - torch| on random inputs: "
              f"{verify(model, folders['onnx int8'], tolerance=None).worst:.2e}")
    if F.manifest:
        for name, wer in compare_wer(path, folders, F.manifest, F.limit).items():
            print(f"WER {name:<11} {wer:.2%}")
    return 0


if __name__ == "__main__":
    run(main)
