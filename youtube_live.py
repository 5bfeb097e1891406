"""Live transcription of YouTube (live or not) and any URL yt-dlp or ffmpeg can open.

    python youtube_live.py --url https://www.youtube.com/watch?v=VIDEO_ID
    python youtube_live.py --url https://example.org/live/stream.m3u8 --max_seconds 600 --output vtt --out live.vtt

yt-dlp's Python API resolves the page to a media URL, ffmpeg pipes 16 kHz mono PCM, and a dropped or
stalled connection is reopened with bounded exponential back-off (``--reconnect_*``) without losing the
transcript so far. ``--flagfile`` works for every flag.
"""

import signal
import sys

from absl import flags as absl_flags

from cli import flags
from cli.common import model_path, run
from rnnt.config import DecodingConfig, EndpointConfig, OutputConfig, SourceConfig
from rnnt.errors import ConfigError

absl_flags.DEFINE_string("url", "", "page or stream to transcribe: YouTube or any site yt-dlp supports, or a direct "
                         "HLS/DASH/Icecast/media URL; live or recorded")
flags.define(SourceConfig, OutputConfig, EndpointConfig, DecodingConfig, extra=("model", "backend", "threads"))


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: the last words are flushed, exit 0


def main(argv: list[str]) -> int:
    from rnnt import live, sources
    from rnnt.inference import load_recognizer

    F = flags.FLAGS
    signal.signal(signal.SIGTERM, _terminate)
    if len(argv) > 1 or not F.url:
        raise ConfigError("pass the stream as --url URL")
    cfg, out_cfg = flags.config_from_flags(SourceConfig), flags.config_from_flags(OutputConfig)
    decoding, endpoint = flags.config_from_flags(DecodingConfig), flags.config_from_flags(EndpointConfig)
    source = sources.UrlSource(F.url, cfg.block_seconds, cfg.realtime, cfg.reconnect_attempts, cfg.reconnect_delay,
                               cfg.reconnect_delay_max, cfg.stall_seconds)
    rec = load_recognizer(model_path(F.model, F.backend), F.backend, F.threads, decoding, endpoint)
    print(f"transcribing {source.name} ({'live' if source.media.is_live else 'recorded'})", file=sys.stderr)
    report = live.transcribe(rec, source, cfg, out_cfg, sys.stdout)
    if report.ended_by:
        print(f"stream ended early: {report.ended_by}", file=sys.stderr)
    if F.stats or report.total_dropped:
        print(report.summary(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
