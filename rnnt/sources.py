"""Live audio sources: files, the microphone and URLs, as iterators of float32 16 kHz blocks.

Legend: N samples in a block (about ``block_seconds`` * 16000).

Every source yields ``Block``s: (N,) float32 mono samples in [-1, 1] at ``SAMPLE_RATE``, the block's
position on the source's own timeline (which keeps counting over audio that was dropped or missed, so
word times stay aligned with the source) and the ``time.monotonic()`` of its arrival. ``close()`` may be
called from any thread and ends the iteration soon after.

- ``FileSource``: ffmpeg decodes any format to 16 kHz mono PCM on a pipe, read a block at a time, so a
  file of hours takes constant memory. ``realtime`` paces it like a live source (ffmpeg ``-re``).
- ``MicrophoneSource``: a sounddevice callback that only copies the block into a queue and counts driver
  overflows and blocks the queue had no room for. Devices that cannot capture at 16 kHz are opened at
  their own rate and resampled (``StreamingResampler``) outside the callback.
- ``UrlSource``: yt-dlp's Python API resolves a page (YouTube, any supported site) or a direct stream URL
  to a media URL, ffmpeg pipes PCM, and a dropped or stalled connection is re-resolved and reopened with
  bounded exponential back-off.

``sounddevice`` and ``yt_dlp`` are imported only inside functions.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import select
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from rnnt.audio import SAMPLE_RATE, ffmpeg_binary, int16_to_float32
from rnnt.errors import SourceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Block:
    samples: np.ndarray  # (N,) float32 in [-1, 1] at SAMPLE_RATE
    position: int  # index of samples[0] on the source timeline (counts audio dropped or missed before it)
    arrival: float  # time.monotonic() when the block was captured or read


@dataclass
class SourceStats:
    """Counters a source updates while it runs (read them from any thread)."""

    overflows: int = 0  # input overflows reported by the audio driver
    dropped_blocks: int = 0  # blocks lost because the capture queue was full
    reconnects: int = 0  # attempts to reopen a dropped URL connection
    missed_seconds: float = 0.0  # live audio that went by while reconnecting


class Source:
    """Base of the sources: iterate for ``Block``s; ``close()`` from any thread stops the iteration."""

    name = "source"
    live = False  # True: blocks come at real-time pace and the reader must never wait on the recognizer

    def __init__(self) -> None:
        self.stats = SourceStats()
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[Block]:
        raise NotImplementedError

    def close(self) -> None:
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


# ----------------------------------------------------------------------------------------------------
# ffmpeg pipes (files and URLs)


class _FfmpegPipe:
    """One ffmpeg process writing s16le 16 kHz mono to stdout; stderr goes to a temporary file so it can
    never fill a pipe and block ffmpeg."""

    def __init__(self, input_args: list[str]) -> None:
        self._err = tempfile.TemporaryFile()
        cmd = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-v", "error", *input_args,
               "-vn", "-sn", "-dn", "-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err)
        except OSError as e:
            self._err.close()
            raise SourceError(f"cannot start ffmpeg: {e}") from e
        self._fd = self.proc.stdout.fileno()
        self._carry = b""  # an odd trailing byte of the last read (half a sample)

    def read(self, n_samples: int, timeout: float | None = None) -> np.ndarray | None:
        """Up to ``n_samples`` (fewer only at the end); an empty array at EOF; None after ``timeout``
        seconds without any data."""
        want = 2 * n_samples
        buf = bytearray(self._carry)
        while len(buf) < want:
            if timeout is not None and not select.select([self._fd], [], [], timeout)[0]:
                return None
            chunk = os.read(self._fd, want - len(buf))
            if not chunk:
                break
            buf += chunk
        usable = len(buf) // 2 * 2
        self._carry = bytes(buf[usable:])
        return int16_to_float32(bytes(buf[:usable]))

    def finish(self, at_eof: bool) -> tuple[int, str]:
        """Wait for ffmpeg to exit (after EOF) or stop it (before); return its exit code and last error line."""
        try:
            code = self.proc.wait(timeout=30 if at_eof else 0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc.stdout.close()
        self._err.seek(0)
        lines = self._err.read().decode(errors="replace").strip().splitlines()
        self._err.close()
        return code, (lines[-1].strip() if lines else "")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


def _check_file(path: str) -> None:
    if not path:
        raise SourceError("no file given; pass --path FILE")
    if not os.path.exists(path):
        raise SourceError(f"audio file not found: {path}")
    if os.path.isdir(path):
        raise SourceError(f"{path} is a folder; pass an audio or video file")
    if not os.access(path, os.R_OK):
        raise SourceError(f"audio file is not readable (permissions): {path}")
    if os.path.getsize(path) == 0:
        raise SourceError(f"audio file is empty: {path}")


def _probe(path: str) -> None:
    """Raise a one-line SourceError unless ffmpeg finds an audio stream it can decode in ``path``."""
    cmd = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-v", "error", "-i", path, "-map", "0:a:0", "-t", "0.1",
           "-f", "null", "-"]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SourceError(f"cannot probe {path} with ffmpeg: {e}") from e
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        msg = lines[-1] if lines else f"ffmpeg exited with code {proc.returncode}"
        if any("matches no streams" in line for line in lines):
            msg = "it has no audio stream"
        raise SourceError(f"cannot decode {path}: {msg}")


def _pipe_blocks(source: "Source", pipe: "_FfmpegPipe", block: int, position: int,
                 timeout: float | None = None) -> Iterator[Block]:
    """Blocks of ``block`` samples from ``pipe`` until it ends, stalls for ``timeout`` s, or ``source`` is
    closed; returns (via StopIteration) "eof", "stalled" or "closed"."""
    while not source.closed:
        samples = pipe.read(block, timeout=timeout)
        if samples is None:
            return "stalled"
        if not len(samples):
            return "eof"
        yield Block(samples, position, time.monotonic())
        position += len(samples)
    return "closed"


class FileSource(Source):
    """Any file ffmpeg reads, streamed as ``block_seconds`` blocks in constant memory."""

    def __init__(self, path: str, block_seconds: float = 0.1, realtime: bool = False) -> None:
        super().__init__()
        _check_file(path)
        _probe(path)  # fail now (no ffmpeg, not media, no audio), not later in the reader thread
        self.path, self.name, self.live = path, os.path.basename(path), realtime
        self._block = max(1, round(block_seconds * SAMPLE_RATE))
        self._pipe: _FfmpegPipe | None = None

    def __iter__(self) -> Iterator[Block]:
        self._pipe = pipe = _FfmpegPipe((["-re"] if self.live else []) + ["-i", self.path])
        position, end = 0, ""
        try:
            for blk in _pipe_blocks(self, pipe, self._block, 0):
                position = blk.position + len(blk.samples)
                yield blk
            end = "eof" if not self.closed else "closed"
        finally:
            code, msg = pipe.finish(at_eof=end == "eof")
        if code != 0 and not self.closed:
            raise SourceError(f"cannot decode {self.path}: {msg or f'ffmpeg exited with code {code}'}")
        if position == 0 and not self.closed:
            raise SourceError(f"no audio in {self.path}: {msg or 'ffmpeg produced no samples'}")

    def close(self) -> None:
        super().close()
        if self._pipe is not None:
            self._pipe.kill()


# ----------------------------------------------------------------------------------------------------
# Microphone


def _sounddevice():
    try:
        import sounddevice
    except ImportError as e:
        raise SourceError("the microphone needs the sounddevice package: pip install sounddevice") from e
    except OSError as e:  # the PortAudio shared library is missing
        raise SourceError(f"the microphone needs PortAudio ({e}); install it (Debian: apt-get install "
                          "libportaudio2, macOS: brew install portaudio)") from e
    return sounddevice


def list_input_devices() -> list[dict]:
    """Every capture device: dicts with ``index``, ``name``, ``hostapi``, ``channels``, ``rate`` and
    ``default`` (the one used when no device is named)."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except Exception as e:
        raise SourceError(f"cannot list audio devices: {e}") from e
    return [{"index": i, "name": d["name"], "hostapi": hostapis[d["hostapi"]]["name"],
             "channels": d["max_input_channels"], "rate": d["default_samplerate"], "default": i == default_in}
            for i, d in enumerate(devices) if d["max_input_channels"] > 0]


def _resolve_device(sd, device: str) -> tuple[int | str | None, dict]:
    """``device``: "" (system default), an index or part of a name -> (sounddevice id, device info)."""
    dev = None if not device else int(device) if device.strip().isdigit() else device
    try:
        info = sd.query_devices(dev, kind="input")
    except ValueError as e:  # no device matches, several match, or it has no inputs
        raise SourceError(f"unknown input device {device!r} ({e}); see --list_devices") from e
    except Exception as e:  # PortAudio: no default input device at all
        if dev is None:
            raise SourceError(f"no microphone found ({e}); connect one or pick a device from --list_devices") from e
        raise SourceError(f"unknown input device {device!r} ({e}); see --list_devices") from e
    if info["max_input_channels"] < 1:
        raise SourceError(f"device {device!r} ({info['name']}) has no input channels; see --list_devices")
    return dev, info


class MicrophoneSource(Source):
    """The default (or a named) capture device; the callback only enqueues."""

    live = True

    def __init__(self, device: str = "", block_seconds: float = 0.1, queue_seconds: float = 10.0,
                 rate: int = 0) -> None:
        """``rate``: capture rate in Hz; 0 = 16 kHz when the device supports it, else the device's own rate.
        Anything but 16 kHz is resampled (after the callback, on the reader's thread)."""
        super().__init__()
        self._sd = _sounddevice()
        self._device, info = _resolve_device(self._sd, device)
        self.name = info["name"]
        self.rate = rate or SAMPLE_RATE
        try:
            self._sd.check_input_settings(self._device, channels=1, dtype="float32", samplerate=self.rate)
        except Exception as e:  # the device cannot capture at this rate
            if rate:
                raise SourceError(f"{self.name!r} cannot capture at {rate} Hz: {e}") from e
            self.rate = int(info["default_samplerate"])
        self._blocksize = max(1, round(block_seconds * self.rate))
        self._queue: queue.Queue = queue.Queue(maxsize=max(2, math.ceil(queue_seconds / block_seconds)))
        self._frames = 0  # device frames seen by the callback (drops included)

    def _callback(self, indata, frames, time_info, status) -> None:
        """PortAudio's thread: count, copy, enqueue; nothing else."""
        if status.input_overflow:
            self.stats.overflows += 1
        try:
            self._queue.put_nowait((indata[:, 0].copy(), self._frames, time.monotonic()))
        except queue.Full:
            self.stats.dropped_blocks += 1
        self._frames += frames

    def __iter__(self) -> Iterator[Block]:
        resampler = StreamingResampler(self.rate) if self.rate != SAMPLE_RATE else None
        try:
            stream = self._sd.InputStream(device=self._device, channels=1, dtype="float32", samplerate=self.rate,
                                          blocksize=self._blocksize, callback=self._callback)
            stream.start()
        except Exception as e:
            raise SourceError(f"cannot open the microphone {self.name!r}: {e}") from e
        try:
            while not self.closed:
                try:
                    samples, frame, arrival = self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                position = frame * SAMPLE_RATE // self.rate
                if resampler is not None:
                    position, samples = resampler.position, resampler.accept(samples)
                yield Block(samples, position, arrival)
        finally:
            stream.abort()
            stream.close()


class StreamingResampler:
    """Polyphase windowed-sinc resampling ``orig_rate`` -> ``new_rate`` a block at a time.

    Output sample m is ``sum_r H[p, r] * x[q - r]`` with ``j = m * down + D``, ``p = j % up``,
    ``q = j // up``: the same zero-phase FIR as ``scipy.signal.resample_poly`` (Kaiser window, beta 5),
    evaluated only where it is needed. Any split of the input into blocks gives identical output; the last
    ``D / up`` input samples wait for the next block.
    """

    def __init__(self, orig_rate: int, new_rate: int = SAMPLE_RATE, half_width: int = 10) -> None:
        from scipy.signal import firwin

        g = math.gcd(orig_rate, new_rate)
        self.up, self.down = new_rate // g, orig_rate // g
        n = 2 * half_width * max(self.up, self.down) + 1
        h = firwin(n, 1.0 / max(self.up, self.down), window=("kaiser", 5.0)) * self.up
        self._delay = (n - 1) // 2  # D: centre of the filter on the upsampled grid
        taps = math.ceil(n / self.up)
        h = np.concatenate([h, np.zeros(taps * self.up - n)])
        self._bank = h.reshape(taps, self.up).T.astype(np.float32)  # (up, taps): H[p, r] = h[p + up * r]
        self._taps = taps
        self._buf = np.zeros(taps - 1, np.float32)  # input history; buf[i] is x[i + self._base]
        self._base = -(taps - 1)
        self._next = 0  # index m of the next output sample

    @property
    def position(self) -> int:
        """Index of the next output sample."""
        return self._next

    def accept(self, samples: np.ndarray) -> np.ndarray:
        """(N,) input samples -> the output samples now computable."""
        self._buf = np.concatenate([self._buf, np.asarray(samples, np.float32).reshape(-1)])
        end = self._base + len(self._buf)  # one past the last input index held
        # the last output whose newest input q = (m * down + D) // up is held: m <= (end * up - 1 - D) / down
        stop = max(self._next, (end * self.up - 1 - self._delay) // self.down + 1)
        m = np.arange(self._next, stop)
        j = m * self.down + self._delay
        p, q = j % self.up, j // self.up
        idx = (q - self._base)[:, None] - np.arange(self._taps)[None, :]  # (M, taps) into buf
        out = np.einsum("mr,mr->m", self._bank[p], self._buf[idx]).astype(np.float32)
        self._next = stop
        keep_from = (stop * self.down + self._delay) // self.up - self._taps + 1 - self._base
        if keep_from > 0:
            self._buf, self._base = self._buf[keep_from:], self._base + keep_from
        return out


# ----------------------------------------------------------------------------------------------------
# URLs (YouTube and anything yt-dlp or ffmpeg opens)


@dataclass(frozen=True)
class Media:
    url: str  # what ffmpeg opens
    headers: dict  # HTTP headers ffmpeg must send (user agent, cookies)
    is_live: bool
    title: str


class _QuietLogger:
    """yt-dlp logger: everything to debug logging (errors come back as exceptions)."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    info = warning = error = debug


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _clean_ytdl_message(e: Exception) -> str:
    msg = _ANSI.sub("", str(e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    msg = re.sub(r"\s*\(caused by .*$", "", msg)  # the same error again, from urllib3
    return re.sub(r"^ERROR:\s*", "", msg)


def resolve_url(url: str) -> Media:
    """A page or stream URL -> the media URL of its best audio (or smallest video with audio)."""
    try:
        import yt_dlp
    except ImportError as e:
        raise SourceError("URLs need yt-dlp: pip install 'yt-dlp[default]'") from e
    opts = {"quiet": True, "no_warnings": True, "noprogress": True, "noplaylist": True, "skip_download": True,
            "logger": _QuietLogger(), "format": "bestaudio/best[height<=480]/best", "socket_timeout": 15}
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(url, download=False)
    except Exception as e:  # yt_dlp.utils.DownloadError and anything an extractor raises
        raise SourceError(f"cannot open {url}: {_clean_ytdl_message(e)}") from e
    if info.get("_type") == "playlist":
        entries = [x for x in (info.get("entries") or []) if x]
        if not entries:
            raise SourceError(f"{url} is an empty playlist")
        info = entries[0]
    fmt = info
    if not fmt.get("url") and info.get("requested_formats"):
        fmt = next((f for f in info["requested_formats"] if f.get("acodec") not in (None, "none")),
                   info["requested_formats"][0])
    if not fmt.get("url"):
        raise SourceError(f"{url} has no playable media (yt-dlp found no stream URL)")
    if fmt.get("acodec") == "none":
        raise SourceError(f"{url} has no audio track")
    return Media(fmt["url"], dict(fmt.get("http_headers") or info.get("http_headers") or {}),
                 bool(info.get("is_live")), str(info.get("title") or url))


def _ffmpeg_http_args(media: Media) -> list[str]:
    if not media.headers or not media.url.startswith(("http:", "https:")):
        return []
    headers = {k: v for k, v in media.headers.items() if k.lower() != "user-agent"}
    args = ["-user_agent", media.headers[k]] if (k := next((k for k in media.headers if k.lower() == "user-agent"),
                                                           None)) else []
    if headers:
        args += ["-headers", "".join(f"{k}: {v}\r\n" for k, v in headers.items())]
    return args


class UrlSource(Source):
    """A live or recorded stream behind a URL; reconnects after drops and stalls with bounded back-off.

    After a drop at most ``attempts`` reconnects in a row are tried; when none of them hears audio the
    source ends cleanly (what was heard is kept) and ``ended_by`` says why. The wait before reconnect k
    (1-based) is ``min(delay * 2**(k-1), delay_max)``. A URL whose first connection hears nothing is an
    error. A recorded stream
    resumes where it broke off; a live one rejoins the live edge, and the time it missed advances the
    block positions so word times stay on the broadcast's clock.
    """

    def __init__(self, url: str, block_seconds: float = 0.1, realtime: bool = False, attempts: int = 5,
                 delay: float = 1.0, delay_max: float = 30.0, stall_seconds: float = 20.0) -> None:
        super().__init__()
        if not url:
            raise SourceError("no URL given; pass --url URL")
        ffmpeg_binary()
        self.url = url
        self.media = resolve_url(url)
        self.name, self.live = self.media.title, self.media.is_live or realtime
        self._realtime = realtime
        self._block = max(1, round(block_seconds * SAMPLE_RATE))
        self._attempts, self._delay, self._delay_max, self._stall = attempts, delay, delay_max, stall_seconds
        self._pipe: _FfmpegPipe | None = None
        self._why = ""  # how the last connection ended: "" cleanly, else the error
        self.ended_by = ""  # set when the source gave up reconnecting: why it ended early

    def _open(self, resume_at: float) -> _FfmpegPipe:
        args = _ffmpeg_http_args(self.media)
        if self._realtime and not self.media.is_live:
            args.append("-re")
        if resume_at > 0 and not self.media.is_live:
            args += ["-ss", f"{resume_at:.3f}"]
        return _FfmpegPipe([*args, "-i", self.media.url])

    def _read_connection(self, position: int) -> Iterator[Block]:
        """Blocks of one ffmpeg connection; sets ``self._why`` to "" at a clean end, else the error."""
        self._pipe = pipe = self._open(position / SAMPLE_RATE)
        end = "closed"
        try:
            end = yield from _pipe_blocks(self, pipe, self._block, position, timeout=self._stall)
        finally:
            code, msg = pipe.finish(at_eof=end == "eof")
        if end == "stalled":
            self._why = f"no audio for {self._stall:g} s"
        else:
            self._why = "" if code == 0 else (msg or f"ffmpeg exited with code {code}")

    def __iter__(self) -> Iterator[Block]:
        position, failed, last = 0, 0, None  # failed: reconnect attempts in a row that heard nothing
        media_ok = True
        while not self.closed:
            heard = False
            if media_ok:
                for block in self._read_connection(position):
                    heard, position, last = True, block.position + len(block.samples), block.arrival
                    yield block
                if self.closed or (not self._why and not self.media.is_live):
                    return  # closed by the caller, or a recording played to its end
            if last is None:
                raise SourceError(f"cannot read {self.url}: {self._why or 'no audio'}")
            failed = 0 if heard else failed + 1
            why = self._why or "the live stream stopped"
            if failed >= self._attempts:
                self.ended_by = f"connection lost ({why}); gave up after {failed} reconnect attempts"
                return
            wait = min(self._delay * 2 ** failed, self._delay_max)
            log.warning("%s: connection lost (%s); reconnecting in %.1f s", self.url, why, wait)
            if self._closed.wait(wait):
                return
            self.stats.reconnects += 1
            media_ok = self._reresolve()
            if media_ok and self.media.is_live:  # live audio went by meanwhile: keep word times on its clock
                missed = max(0.0, time.monotonic() - last)
                self.stats.missed_seconds += missed
                position += int(missed * SAMPLE_RATE)

    def _reresolve(self) -> bool:
        """Resolve the page again (stream URLs expire); False (a failed attempt) when that fails."""
        try:
            self.media = resolve_url(self.url)
            return True
        except SourceError as e:
            self._why = str(e)
            return False

    def close(self) -> None:
        super().close()
        if self._pipe is not None:
            self._pipe.kill()
