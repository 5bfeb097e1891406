"""Data-parallel training under torchrun: two CPU processes (gloo), one thread each, on the tiny corpus."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from rnnt import checkpoint
from rnnt.data import shard_batches
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")

STEPS = 12


def _torchrun(manifest: str, exp_dir: str, steps: int, extra: list[str] = ()) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 -m cli.train`` with the tiny flagfile."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "cli.train", "--flagfile", os.path.join(REPO, "flagfiles", "tiny.txt"),
           f"--train_manifest={manifest}", f"--dev_manifest={manifest}", f"--exp_dir={exp_dir}", f"--max_steps={steps}",
           "--vocab_size=40", "--threads=1", "--batch_size=4", "--accum_steps=2", "--warmup_steps=3", "--log_every=1",
           "--sync_check_every=1", "--checkpoint_every=6", "--eval_every=1000", "--eval_utterances=8", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def _losses(log: str) -> dict[int, float]:
    return {int(s): float(v) for s, v in re.findall(r"\bstep (\d+) epoch \d+ loss ([\d.]+)", log)}


@pytest.fixture(scope="module")
def first_run(tiny_corpus, tmp_path_factory):
    exp = str(tmp_path_factory.mktemp("ddp_exp"))
    proc = _torchrun(tiny_corpus, exp, STEPS)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return exp, proc


def test_ranks_hold_identical_weights_after_every_step_and_loss_falls(first_run):
    exp, proc = first_run
    log = proc.stderr
    assert "world size 2; device cpu; effective batch 4 x 2 x 2" in log
    for step in range(1, STEPS + 1):  # logged once: by rank 0 alone
        assert len(re.findall(rf"sync check step {step}: weights identical on 2 ranks", log)) == 1, step
    losses = _losses(log)
    assert sorted(losses) == list(range(1, STEPS + 1))
    first, last = sum(losses[s] for s in (1, 2, 3)) / 3, sum(losses[s] for s in range(STEPS - 2, STEPS + 1)) / 3
    assert last < 0.8 * first, losses
    assert re.search(rf"eval step {STEPS}: dev loss [\d.]+ .* on 8 utterances", log)  # shared out, summed
    assert len(re.findall(r"finished at step 12", log)) == 1
    with open(os.path.join(exp, "train.log")) as f:
        assert "sync check step 12" in f.read()
    names = sorted(n for n in os.listdir(exp) if n.startswith("ckpt-"))
    assert names == ["ckpt-00000006.pt", "ckpt-00000012.pt"]
    assert checkpoint.load(os.path.join(exp, names[-1])).extra["world_size"] == 2


def test_resume_under_torchrun_continues_the_step_count(first_run, tiny_corpus):
    exp, _ = first_run
    proc = _torchrun(tiny_corpus, exp, STEPS + 4, ["--resume"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stderr
    assert re.search(rf"resumed from .*ckpt-000000{STEPS}\.pt at step {STEPS} ", log)
    assert sorted(_losses(log)) == list(range(STEPS + 1, STEPS + 5))
    for step in range(STEPS + 1, STEPS + 5):
        assert f"sync check step {step}: weights identical on 2 ranks" in log
    assert checkpoint.load(checkpoint.newest(exp)).step == STEPS + 4


def test_shards_are_disjoint_and_equally_long():
    batches = [[i] for i in range(11)]
    shards = [shard_batches(batches, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    flat = [b[0] for s in shards for b in s]
    assert len(set(flat)) == 9
    assert shard_batches(batches, 0, 1) == batches


def _diverge_worker(rank: int, init_file: str, result_dir: str) -> None:
    """One of two gloo processes; rank 1 nudges a weight, and both must see check_in_sync fail."""
    import torch.distributed as dist

    from rnnt.errors import RnntError
    from rnnt.train import DistInfo, check_in_sync

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    info = DistInfo(rank, 2)
    check_in_sync(model, info, torch.device("cpu"))  # identical: passes
    if rank == 1:
        with torch.no_grad():
            model.bias[2] += 1e-6
    try:
        check_in_sync(model, info, torch.device("cpu"))
        outcome = "passed"
    except RnntError as e:
        outcome = str(e)
    with open(os.path.join(result_dir, f"rank{rank}"), "w") as f:
        f.write(outcome)
    dist.destroy_process_group()


def test_sync_check_fails_loudly_when_ranks_diverge(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_diverge_worker, args=(str(tmp_path / "pg"), str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        text = (tmp_path / f"rank{rank}").read_text()
        assert "weights differ across the 2 ranks (first: bias)" in text, text
