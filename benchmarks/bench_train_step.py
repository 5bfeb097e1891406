"""Benchmark (not a test): one training step with the full RNN-T loss against the pruned loss, in fp32
and, with ``--precisions=fp32,bf16``, under CPU bf16 autocast.

    python benchmarks/bench_train_step.py --flagfile flagfiles/en_small.txt           # the shipped shape
    python benchmarks/bench_train_step.py --flagfile flagfiles/en_small.txt --prune_ranges=0,3,5,8
    python benchmarks/bench_train_step.py --flagfile flagfiles/en_small.txt --prune_ranges=5 --precisions=fp32,bf16

Builds the model of the flagfile (random weights), then times forward + backward + Adam on the same
random batch (``--batch`` utterances of ``--seconds`` each, ``--tokens_per_second`` targets) for every
``--prune_ranges`` value and ``--precisions`` value, interleaved over ``--rounds`` so machine noise hits
them alike. Prints the median milliseconds per step and the speed-up over the first combination (the full
loss in fp32 by default), measured in this run.
"""

import dataclasses
import os
import statistics
import sys
import time

import torch
from absl import flags as absl_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cli import flags  # noqa: E402
from cli.common import run  # noqa: E402
from rnnt.config import AugmentConfig, FeatureConfig, ModelConfig, TrainConfig  # noqa: E402

absl_flags.DEFINE_integer("batch", 24, "utterances per batch")
absl_flags.DEFINE_float("seconds", 5.0, "seconds of audio per utterance")
absl_flags.DEFINE_float("tokens_per_second", 5.0, "target tokens per second of audio (the corpus has about 5)")
absl_flags.DEFINE_string("prune_ranges", "0,5", "comma-separated prune_range values to time; 0 = full loss")
absl_flags.DEFINE_string("precisions", "fp32", "comma-separated precisions to time: fp32, bf16 (CPU autocast)")
absl_flags.DEFINE_integer("rounds", 3, "timed steps per combination")
flags.define(FeatureConfig, ModelConfig, TrainConfig, AugmentConfig)  # a training flagfile reads as it is


def main(argv: list[str]) -> int:
    from rnnt.train import autocast_dtype, cpu_bf16_is_native
    from rnnt.transducer import build_model

    F = absl_flags.FLAGS
    if F.threads:
        torch.set_num_threads(F.threads)
    features = flags.config_from_flags(FeatureConfig)
    frames = int(F.seconds * features.sample_rate / features.hop_length)
    tokens = max(1, int(F.seconds * F.tokens_per_second))
    base = flags.config_from_flags(ModelConfig)
    train_cfg = flags.config_from_flags(TrainConfig)
    torch.manual_seed(0)
    feats = torch.randn(F.batch, frames, base.n_mels)
    lengths = torch.full((F.batch,), frames)
    targets = torch.randint(1, base.vocab_size, (F.batch, tokens))
    target_lengths = torch.full((F.batch,), tokens)
    precisions = [p.strip() for p in F.precisions.split(",")]
    if "bf16" in precisions and not cpu_bf16_is_native():
        print("bf16: this CPU has no AMX or AVX-512 BF16, so training runs fp32 there; not timed")
        precisions = [p for p in precisions if p != "bf16"] or ["fp32"]
    combos = [(int(r), p) for r in F.prune_ranges.split(",") for p in precisions]
    models = {}
    for r, p in combos:
        torch.manual_seed(0)
        model = build_model(ModelConfig(**{**base.__dict__, "prune_range": r})).train()
        models[r, p] = (model, torch.optim.Adam(model.parameters(), lr=1e-4))

    def step(combo: tuple[int, str]) -> float:
        model, opt = models[combo]
        start = time.perf_counter()
        amp = autocast_dtype(dataclasses.replace(train_cfg, precision=combo[1]), torch.device("cpu"))
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):  # as training does
            loss = model(feats, lengths, targets, target_lengths).mean()
        loss.float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for c in combos:
        step(c)  # warm-up
    times = {c: [] for c in combos}
    for _ in range(F.rounds):
        for c in combos:
            times[c].append(step(c))
    print(f"batch {F.batch} x {F.seconds:g} s ({frames // base.stack} encoder frames, {tokens} tokens), "
          f"vocab {base.vocab_size}, joint {base.joint_dim}, {torch.get_num_threads()} thread(s)")
    first = statistics.median(times[combos[0]])
    for r, p in combos:
        med = statistics.median(times[r, p])
        name = ("full loss" if r == 0 else f"pruned, range {r}") + f", {p}"
        print(f"  {name:<24} {med * 1000:8.0f} ms/step   x{first / med:.2f} vs the first")
    return 0


if __name__ == "__main__":
    run(main)
