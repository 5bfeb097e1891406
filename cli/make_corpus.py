"""Synthesize the TTS training corpus: ``python -m cli.make_corpus --flagfile flagfiles/corpus_en.txt``.

Resumable: run the same command again to continue; finished utterances are skipped. The manifests
``<out_dir>/{train,dev,test}.jsonl`` are rewritten every ``refresh_every`` utterances, so training can
start on a partial corpus. Ctrl-C or SIGTERM (to the driver, or to all its processes) stops it within
seconds, after a last manifest rewrite; it exits 130.
"""

from __future__ import annotations

from cli import common, flags
from rnnt.corpus import CorpusConfig, engine_summary, synthesize_corpus

flags.define(CorpusConfig)


def main(argv: list[str]) -> int:
    del argv
    cfg = flags.config_from_flags(CorpusConfig)
    per_voice = synthesize_corpus(cfg)
    print(f"{'voice':<36} {'hours':>8} {'utts':>7} {'speed':>7}")
    for name, s in list(per_voice.items()) + [("---", {})] + list(engine_summary(per_voice).items()):
        if s:
            print(f"{name:<36} {s['hours']:8.3f} {s['utterances']:7d} {s['speed']:6.1f}x")
        else:
            print("--- per engine (speed = audio seconds per CPU second)")
    total = sum(s["hours"] for s in per_voice.values())
    print(f"total {total:.2f} hours in {cfg.out_dir}/{{train,dev,test}}.jsonl")
    return 0


if __name__ == "__main__":
    common.run(main)
