"""Result files of the scoring commands: a missing folder is made, an unwritable path fails in one line
before any work and leaves an earlier result as it was."""

import json
import os
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


def test_evaluate_group_by_scores_each_voice_apart(random_model, tiny_corpus, tmp_path):
    lines = [json.loads(line) for line in open(tiny_corpus)][:5]
    manifest = tmp_path / "voices.jsonl"
    with open(manifest, "w") as f:
        for i, d in enumerate(lines):
            d["audio"] = os.path.join(os.path.dirname(tiny_corpus), d["audio"])
            if i < 4:
                d["voice"] = "a" if i % 2 else "b"
            f.write(json.dumps(d) + "\n")
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "cli.evaluate", f"--manifest={manifest}", f"--model={random_model}",
                           "--group_by=voice", f"--json={out}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["group_by"] == "voice" and list(res["groups"]) == ["", "a", "b"]
    assert [g["utterances"] for g in res["groups"].values()] == [1, 2, 2]
    assert [u["group"] for u in res["utterances"]] == ["b", "a", "b", "a", ""]
    for key in ("substitutions", "deletions", "insertions", "reference_words"):
        assert sum(g[key] for g in res["groups"].values()) == res[key]
    words_a = sum(u["ref_words"] for u in res["utterances"] if u["group"] == "a")
    errors_a = sum(u["errors"] for u in res["utterances"] if u["group"] == "a")
    assert res["groups"]["a"]["wer"] == errors_a / words_a
    assert "voice=a: WER" in proc.stdout and "voice=(none): WER" in proc.stdout
