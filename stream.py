"""Live transcription from the microphone or a file.

    python stream.py                                  # the default microphone; Ctrl-C flushes and exits
    python stream.py --list_devices                   # capture devices, then pick one with --device
    python stream.py --path talk.mp3 [--realtime]     # any format ffmpeg reads, streamed in constant memory
    python stream.py --path talk.mp3 --output srt --out talk.srt --stats

On a terminal the partial hypothesis rewrites in place and finished utterances go on their own lines;
piped, only finished utterances are printed. ``--flagfile`` works for every flag.
"""

import signal
import sys

from absl import flags as absl_flags

from cli import flags
from cli.common import model_path, run
from rnnt.config import DecodingConfig, EndpointConfig, OutputConfig, SourceConfig
from rnnt.errors import ConfigError, SourceError

absl_flags.DEFINE_string("path", "", "transcribe this audio or video file (any format ffmpeg reads) instead of "
                         "the microphone")
absl_flags.DEFINE_string("device", "", "microphone: input device index or part of its name (see --list_devices); "
                         "empty = the system default")
absl_flags.DEFINE_bool("list_devices", False, "list the audio capture devices (* = the default) and exit")
flags.define(SourceConfig, only=("block_seconds", "queue_seconds", "max_seconds", "realtime"))
flags.define(OutputConfig, EndpointConfig, DecodingConfig, extra=("model", "backend", "threads"))


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: the last words are flushed, exit 0


def _list_devices() -> int:
    from rnnt.sources import list_input_devices

    devices = list_input_devices()
    if not devices:
        raise SourceError("no audio capture devices found; connect a microphone")
    for d in devices:
        print(f"{'*' if d['default'] else ' '} {d['index']:3d}  {d['name']}  ({d['hostapi']}, {d['channels']} ch, "
              f"{d['rate']:.0f} Hz)")
    return 0


def main(argv: list[str]) -> int:
    from rnnt import live, sources
    from rnnt.inference import load_recognizer

    F = flags.FLAGS
    signal.signal(signal.SIGTERM, _terminate)
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {argv[1:]}; a file goes after --path")
    if F.list_devices:
        return _list_devices()
    if F.path and F.device:
        raise ConfigError("--device picks a microphone; it cannot be combined with --path")
    cfg, out_cfg = flags.config_from_flags(SourceConfig), flags.config_from_flags(OutputConfig)
    decoding, endpoint = flags.config_from_flags(DecodingConfig), flags.config_from_flags(EndpointConfig)
    if F.path:
        source = sources.FileSource(F.path, cfg.block_seconds, cfg.realtime)
    else:
        source = sources.MicrophoneSource(F.device, cfg.block_seconds, cfg.queue_seconds)
    rec = load_recognizer(model_path(F.model, F.backend), F.backend, F.threads, decoding, endpoint)
    listening = None if F.path else lambda: print(f"listening on {source.name} (Ctrl-C to stop)", file=sys.stderr)
    report = live.transcribe(rec, source, cfg, out_cfg, sys.stdout, listening)
    if F.stats or report.total_dropped or report.source.overflows:
        print(report.summary(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
