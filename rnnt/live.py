"""Live transcription: a source feeds a recognizer on its own thread; events come back for the writers.

Legend: N samples in a block.

Threads:

- the reader iterates a ``Source`` and only enqueues ``Block``s. For a live source a full queue drops the
  block (counted; a live source must never wait on the model); a file waits instead, so nothing is lost.
- the decoder takes blocks, runs ``Stream.accept`` and turns new tokens into ``partial`` events (when the
  current utterance's text changed) and closed utterances into ``final`` events, stamped with the source
  timeline so that dropped or missed audio does not shift later word times.
- the caller's thread (``run``) hands events to ``on_event`` and owns all output. Ctrl-C there closes the
  source; what is queued is still decoded and the last utterance flushed as a final.

Memory is bounded: the queue holds at most ``queue_seconds`` of audio, the stream resets its hypothesis
at every endpoint, and latencies go into a fixed histogram.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import queue
import shutil
import signal
import textwrap
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

from rnnt.audio import SAMPLE_RATE
from rnnt.config import OutputConfig, SourceConfig
from rnnt.errors import ConfigError
from rnnt.session import Recognizer, Utterance, Word
from rnnt.sources import Block, Source, SourceStats

log = logging.getLogger(__name__)

_END = object()  # queue sentinel
_STARTED = object()  # the source delivered its first block


@dataclass(frozen=True)
class Event:
    kind: str  # "partial" (the current utterance so far) or "final" (a closed utterance)
    utterance: Utterance  # times in seconds on the source timeline


class LatencyStats:
    """Distribution of seconds in a fixed log-spaced histogram (1 % wide bins, 0.1 ms to ~3 h): memory
    does not grow with the stream, quantiles are within 1 %."""

    _LO, _RATIO = 1e-4, 1.01

    def __init__(self) -> None:
        self._bins = [0] * (int(math.log(1e8) / math.log(self._RATIO)) + 2)
        self.count = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        i = 0 if seconds <= self._LO else int(math.log(seconds / self._LO) / math.log(self._RATIO)) + 1
        self._bins[min(i, len(self._bins) - 1)] += 1
        self.count += 1
        self.max = max(self.max, seconds)

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1) in seconds; 0 when empty."""
        if not self.count:
            return 0.0
        rank, seen = q * (self.count - 1), 0
        for i, n in enumerate(self._bins):
            seen += n
            if seen > rank:
                return min(self.max, self._LO * self._RATIO ** max(i - 0.5, 0))
        return self.max


@dataclass
class LiveReport:
    """What a run did; ``summary()`` is the ``--stats`` line."""

    audio_seconds: float = 0.0  # audio decoded
    compute_seconds: float = 0.0  # time spent in the recognizer
    wall_seconds: float = 0.0
    latency: LatencyStats = field(default_factory=LatencyStats)  # block arrival -> its words decoded
    dropped_blocks: int = 0  # blocks the reader dropped because the queue was full (live sources)
    source: SourceStats = field(default_factory=SourceStats)
    finals: int = 0
    interrupted: bool = False  # stopped by Ctrl-C
    ended_by: str = ""  # why the source ended early (a URL that gave up reconnecting), else ""

    @property
    def rtf(self) -> float:
        """Real-time factor: recognizer time / audio time."""
        return self.compute_seconds / self.audio_seconds if self.audio_seconds else 0.0

    @property
    def total_dropped(self) -> int:
        return self.dropped_blocks + self.source.dropped_blocks

    def summary(self) -> str:
        s = self.source
        median, p95 = self.latency.quantile(0.5) * 1000, self.latency.quantile(0.95) * 1000
        line = (f"stats: {self.audio_seconds:.1f} s of audio in {self.wall_seconds:.1f} s, RTF {self.rtf:.3f}, "
                f"latency median {median:.0f} ms p95 {p95:.0f} ms (block arrival to words), {self.finals} utterances, "
                f"dropped blocks {self.total_dropped}, overflows {s.overflows}")
        if s.reconnects or s.missed_seconds:
            line += f", reconnects {s.reconnects}, missed {s.missed_seconds:.1f} s"
        return line


class _Timeline:
    """Maps seconds of decoded audio to seconds on the source timeline (they differ after drops)."""

    def __init__(self) -> None:
        self._marks = [(0, 0)]  # (decoded sample, source position - decoded sample) from there on

    def note(self, decoded: int, position: int) -> None:
        if position - decoded != self._marks[-1][1]:
            self._marks.append((decoded, position - decoded))

    def shift(self, t: float) -> float:
        """Seconds to add to decoded time ``t``."""
        s = t * SAMPLE_RATE
        return next((off for at, off in reversed(self._marks) if at <= s + 0.5), self._marks[0][1]) / SAMPLE_RATE

    def forget_before(self, t: float) -> None:
        """Drop marks no time >= ``t`` needs (keeps memory bounded)."""
        s = t * SAMPLE_RATE
        while len(self._marks) > 1 and self._marks[1][0] <= s:
            self._marks.pop(0)

    def utterance(self, u: Utterance) -> Utterance:
        if len(self._marks) == 1 and self._marks[0][1] == 0:
            return u
        words = [Word(w.text, w.start + self.shift(w.start), w.end + self.shift(w.start)) for w in u.words]
        start = words[0].start if words else u.start + self.shift(u.start)
        end = words[-1].end if words else u.end + self.shift(u.end)
        return dataclasses.replace(u, words=words, start=start, end=end)


class _Pipeline:
    def __init__(self, recognizer: Recognizer, source: Source, cfg: SourceConfig) -> None:
        self.rec, self.source, self.cfg = recognizer, source, cfg
        self.blocks: queue.Queue = queue.Queue(maxsize=max(2, math.ceil(cfg.queue_seconds / cfg.block_seconds)))
        self.events: queue.Queue = queue.Queue()  # unbounded, but drained continuously by the caller
        self.report = LiveReport(source=source.stats)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._last_drop_log = 0.0
        self.reader = threading.Thread(target=self._read, name="rnnt-reader", daemon=True)
        self.decoder = threading.Thread(target=self._decode, name="rnnt-decoder", daemon=True)

    # --- reader thread -------------------------------------------------------------------------------
    def _read(self) -> None:
        limit = round(self.cfg.max_seconds * SAMPLE_RATE)
        taken = 0
        try:
            for i, block in enumerate(self.source):
                if self.stop.is_set():
                    break
                if i == 0:
                    self.events.put(_STARTED)
                if limit and taken + len(block.samples) >= limit:
                    self._enqueue(dataclasses.replace(block, samples=block.samples[: limit - taken]))
                    break
                taken += len(block.samples)
                self._enqueue(block)
        except BaseException as e:  # handed to the caller's thread, which re-raises it
            self.error = e
        finally:
            self.source.close()
            while self.decoder.is_alive():
                try:
                    self.blocks.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def _enqueue(self, block: Block) -> None:
        if self.source.live:
            try:
                self.blocks.put_nowait(block)
            except queue.Full:
                self.report.dropped_blocks += 1
                now = time.monotonic()
                if now - self._last_drop_log > 10:
                    self._last_drop_log = now
                    log.warning("recognizer slower than the source: %d blocks dropped so far (RTF %.2f)",
                                self.report.total_dropped, self.report.rtf)
            return
        while not self.stop.is_set():
            try:
                self.blocks.put(block, timeout=0.1)
                return
            except queue.Full:
                continue

    # --- decoder thread ------------------------------------------------------------------------------
    def _decode(self) -> None:
        stream, timeline = self.rec.create_stream(), _Timeline()
        decoded, shown, seen = 0, "", None
        try:
            while (block := self.blocks.get()) is not _END:
                t0 = time.perf_counter()
                timeline.note(decoded, block.position)
                stream.accept(block.samples)
                decoded += len(block.samples)
                shown = self._emit(stream, timeline, shown, stream.revision != seen)
                seen = stream.revision
                self.report.compute_seconds += time.perf_counter() - t0
                self.report.audio_seconds = decoded / SAMPLE_RATE
                self.report.latency.add(time.monotonic() - block.arrival)
            t0 = time.perf_counter()
            stream.finalize()
            self._emit(stream, timeline, shown, False)
            self.report.compute_seconds += time.perf_counter() - t0
        except BaseException as e:
            self.error = e
            self.stop.set()
            self.source.close()
        finally:
            self.events.put(_END)

    def _emit(self, stream, timeline: _Timeline, shown: str, changed: bool) -> str:
        """Queue final events for closed utterances and a partial when the text changed; return the
        partial text now shown."""
        for u in stream.pop_finals():
            if u.text:
                self.events.put(Event("final", timeline.utterance(u)))
                self.report.finals += 1
            timeline.forget_before(u.end)
            shown = ""
        if changed:
            partial = stream.partial
            if partial.text != shown:
                self.events.put(Event("partial", timeline.utterance(partial)))
                shown = partial.text
        return shown

    # --- caller's thread -----------------------------------------------------------------------------
    def pump(self, on_event: Callable[[Event], None], on_start: Callable[[], None] | None,
             stop_requested: threading.Event | None = None) -> None:
        while True:
            if stop_requested is not None and stop_requested.is_set() and not self.stop.is_set():
                self.interrupt()  # Ctrl-C or SIGTERM: stop reading, keep pumping until the last words
            try:
                ev = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if ev is _END:
                return
            if ev is _STARTED:
                if on_start is not None:
                    on_start()
                continue
            on_event(ev)

    def interrupt(self) -> None:
        self.report.interrupted = True
        self.stop.set()
        self.source.close()


def _catch_stop_signals(stop_requested: threading.Event) -> dict:
    """On the main thread, make SIGINT and SIGTERM set ``stop_requested`` instead of raising
    KeyboardInterrupt wherever the main thread happens to be: an exception raised inside a queue's lock
    can leave that lock held and hang the flush. A second signal raises KeyboardInterrupt. Returns the
    previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame) -> None:
        if stop_requested.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C while the last words flush
        stop_requested.set()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def run(recognizer: Recognizer, source: Source, cfg: SourceConfig, on_event: Callable[[Event], None],
        on_start: Callable[[], None] | None = None) -> LiveReport:
    """Transcribe ``source`` until it ends, ``cfg.max_seconds`` pass or Ctrl-C; ``on_event`` gets every
    event on this thread, ``on_start`` is called once the source delivered its first audio (a microphone
    is open). A source or recognizer error is raised after the words so far were delivered."""
    pipe = _Pipeline(recognizer, source, cfg)
    t0 = time.monotonic()
    stop_requested = threading.Event()
    previous = _catch_stop_signals(stop_requested)
    try:
        pipe.decoder.start()
        pipe.reader.start()
        try:
            pipe.pump(on_event, on_start, stop_requested)
        except KeyboardInterrupt:  # a second signal while flushing propagates; one raised another way flushes
            if stop_requested.is_set():
                raise
            pipe.interrupt()
            pipe.pump(on_event, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    pipe.decoder.join()
    pipe.reader.join(timeout=5)
    pipe.report.wall_seconds = time.monotonic() - t0
    pipe.report.ended_by = getattr(source, "ended_by", "")
    if pipe.error is not None:
        raise pipe.error
    return pipe.report


# ----------------------------------------------------------------------------------------------------
# Writers


def _clock(t: float, sep: str) -> str:
    ms = max(0, round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


class TextWriter:
    """Plain text. ``partials``: rewrite the current partial in place (a terminal) and put finals on
    their own lines; otherwise finals only, one per line."""

    def __init__(self, out: TextIO, partials: bool) -> None:
        self.out, self.partials = out, partials
        self._dirty = False

    def write(self, ev: Event) -> None:
        text = ev.utterance.text
        if ev.kind == "final":
            self.out.write(("\r\x1b[K" if self._dirty else "") + text + "\n")
            self._dirty = False
        elif self.partials:
            width = shutil.get_terminal_size((80, 24)).columns - 1
            self.out.write("\r\x1b[K" + (text if len(text) <= width else "…" + text[-(width - 1):]))
            self._dirty = True
        else:
            return
        self.out.flush()

    def close(self) -> None:
        if self._dirty:
            self.out.write("\r\x1b[K")
            self.out.flush()


class JsonlWriter:
    """One JSON object per event: ``{"type", "utterance", "text", "start", "end", "words": [{"word",
    "start", "end"}]}``, times in seconds from the start of the source."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, ev: Event) -> None:
        u = ev.utterance
        obj = {"type": ev.kind, "utterance": u.index, "text": u.text, "start": round(u.start, 3),
               "end": round(u.end, 3),
               "words": [{"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)} for w in u.words]}
        self.out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.out.flush()

    def close(self) -> None:
        pass


class SubtitleWriter:
    """SRT or WebVTT cues from final utterances, written as they close. A long utterance is split at word
    boundaries into cues of at most two lines of ``line_chars`` and ``max_cue_seconds``; cues never
    overlap and last at least ``min_cue_seconds``."""

    def __init__(self, out: TextIO, fmt: str, line_chars: int = 42, max_cue_seconds: float = 7.0,
                 min_cue_seconds: float = 0.3) -> None:
        assert fmt in ("srt", "vtt")
        self.out, self.fmt = out, fmt
        self.line_chars, self.max_cue, self.min_cue = line_chars, max_cue_seconds, min_cue_seconds
        self._n, self._last_end = 0, 0.0
        if fmt == "vtt":
            out.write("WEBVTT\n\n")
            out.flush()

    def _cues(self, words: list[Word]) -> list[list[Word]]:
        cues: list[list[Word]] = [[]]
        for w in words:
            cur = cues[-1]
            text = " ".join(x.text for x in cur + [w])
            if cur and (len(textwrap.wrap(text, self.line_chars)) > 2 or w.end - cur[0].start > self.max_cue):
                cues.append([w])
            else:
                cur.append(w)
        return [c for c in cues if c]

    def write(self, ev: Event) -> None:
        if ev.kind != "final":
            return
        u = ev.utterance
        for cue in self._cues(u.words or [Word(u.text, u.start, u.end)]):
            start = max(cue[0].start, self._last_end)
            end = max(cue[-1].end, start + self.min_cue)
            self._last_end = end
            self._n += 1
            sep = "," if self.fmt == "srt" else "."
            lines = textwrap.wrap(" ".join(w.text for w in cue), self.line_chars) or [""]
            head = f"{self._n}\n" if self.fmt == "srt" else ""
            self.out.write(f"{head}{_clock(start, sep)} --> {_clock(end, sep)}\n" + "\n".join(lines) + "\n\n")
        self.out.flush()

    def close(self) -> None:
        pass


def make_writer(fmt: str, out: TextIO, tty: bool = False) -> TextWriter | JsonlWriter | SubtitleWriter:
    """A writer of ``fmt`` (text, jsonl, srt, vtt); text shows partials only when ``tty``."""
    if fmt == "text":
        return TextWriter(out, partials=tty)
    if fmt == "jsonl":
        return JsonlWriter(out)
    return SubtitleWriter(out, fmt)


def transcribe(recognizer: Recognizer, source: Source, source_cfg: SourceConfig, output: OutputConfig,
               stdout: TextIO, on_start: Callable[[], None] | None = None) -> LiveReport:
    """``run`` with the writers of ``output``: the chosen format to ``output.out`` (or ``stdout``); with a
    file, ``stdout`` also shows the words live as text."""
    tty = bool(getattr(stdout, "isatty", lambda: False)())
    files, writers = [], []
    if output.out:
        try:
            files.append(open(output.out, "w", encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot write --out {output.out}: {e.strerror}") from e
        writers += [make_writer(output.output, files[0]), TextWriter(stdout, partials=tty)]
    else:
        writers.append(make_writer(output.output, stdout, tty))
    try:
        return run(recognizer, source, source_cfg, lambda ev: [w.write(ev) for w in writers], on_start)
    finally:
        for w in writers:
            w.close()
        for f in files:
            f.close()
