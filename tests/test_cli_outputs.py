"""Result files of the scoring commands: a missing folder is made, an unwritable path fails in one line
before any work and leaves an earlier result as it was."""

import json
import subprocess
import sys

from tests.conftest import REPO


def _evaluate(manifest, model, out):
    return subprocess.run([sys.executable, "-m", "cli.evaluate", f"--manifest={manifest}", f"--model={model}",
                           "--limit=2", f"--json={out}"], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_evaluate_json_makes_its_folder(random_model, tiny_corpus, tmp_path):
    out = tmp_path / "new" / "deeper" / "result.json"
    proc = _evaluate(tiny_corpus, random_model, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res) >= {"wer", "rtf", "utterances"}
    assert len(res["utterances"]) == 2
    assert [p.name for p in out.parent.iterdir()] == ["result.json"]  # no temporary file left behind


def test_evaluate_json_blocked_path_is_one_line_error_before_work(random_model, tiny_corpus, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("an earlier result\n")
    proc = _evaluate(tiny_corpus, random_model, blocker / "result.json")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: cannot write --json {blocker / 'result.json'}: a file is in the way of its folder")
    assert "Traceback" not in proc.stderr and "WER" not in proc.stdout  # refused before scoring
    assert blocker.read_text() == "an earlier result\n"


def test_evaluate_json_that_is_a_folder_is_refused(random_model, tiny_corpus, tmp_path):
    proc = _evaluate(tiny_corpus, random_model, tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: cannot write --json {tmp_path}")
    assert "Traceback" not in proc.stderr
