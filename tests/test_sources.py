"""Sources with real parts: ffmpeg on real files, PulseAudio as a virtual microphone, the resampler.

The ``virtual_mic`` fixture starts a private PulseAudio daemon (its own runtime dir) with a 16 kHz mono
null sink whose monitor is the default source, so ``paplay --device=vsink x.wav`` is heard by
sounddevice sample for sample (after the first ~0.5 s of a stream, which the null sink's rewind hides
from its monitor: played files start with a second of silence). It is shared with tests/test_live.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

from rnnt.audio import SAMPLE_RATE, load_audio, write_wav
from rnnt.errors import RnntError, SourceError
from rnnt.sources import FileSource, StreamingResampler, UrlSource, list_input_devices
from tests.conftest import REPO

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


STEREO_44K = ["-af", "pan=stereo|c0=c0|c1=c0", "-ar", "44100"]  # the same signal in both channels


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def tone(seconds: float, rate: int = SAMPLE_RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def read_all(source) -> np.ndarray:
    return np.concatenate([b.samples for b in source])


# ----------------------------------------------------------------------------------------------------
# Files


@needs_ffmpeg
def test_file_blocks_are_the_samples_with_contiguous_positions(tmp_path, rng):
    x = (rng.standard_normal(SAMPLE_RATE * 2 + 123) * 0.1).astype(np.float32)
    write_wav(str(tmp_path / "a.wav"), x)
    blocks = list(FileSource(str(tmp_path / "a.wav"), block_seconds=0.25))
    assert all(len(b.samples) == 4000 for b in blocks[:-1]) and 0 < len(blocks[-1].samples) <= 4000
    assert [b.position for b in blocks] == list(range(0, len(x), 4000))
    assert all(b.samples.dtype == np.float32 for b in blocks)
    np.testing.assert_array_equal(np.concatenate([b.samples for b in blocks]), load_audio(str(tmp_path / "a.wav")))
    assert all(a.arrival <= b.arrival for a, b in zip(blocks, blocks[1:]))


@needs_ffmpeg
@pytest.mark.parametrize("ext,args", [("mp3", ["-c:a", "libmp3lame", "-b:a", "192k"]), ("flac", []),
                                      ("ogg", ["-c:a", "libvorbis"]), ("m4a", ["-c:a", "aac"])])
def test_odd_formats_stream_like_the_16k_original(tmp_path, ext, args):
    """44.1 kHz stereo in any codec comes out as 16 kHz mono aligned with the original (no delay)."""
    x = tone(2.0)
    write_wav(str(tmp_path / "a.wav"), x)
    ffmpeg("-i", str(tmp_path / "a.wav"), *STEREO_44K, *args, str(tmp_path / f"a.{ext}"))
    y = read_all(FileSource(str(tmp_path / f"a.{ext}")))
    assert abs(len(y) - len(x)) < 0.03 * SAMPLE_RATE
    n = min(len(x), len(y)) - 2000
    assert np.sqrt(np.mean((x[1000:n] - y[1000:n]) ** 2)) < 0.03 * np.sqrt(np.mean(x ** 2)) + 1e-3


@needs_ffmpeg
def test_file_memory_is_constant(tmp_path):
    """Ten minutes of audio (38 MB as float32) stream through with well under a megabyte held."""
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100:duration=600", "-ac", "2",
           str(tmp_path / "long.flac"))
    tracemalloc.start()
    n = 0
    for block in FileSource(str(tmp_path / "long.flac"), block_seconds=0.1):
        n += len(block.samples)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 600 * SAMPLE_RATE
    assert peak < 2_000_000, peak


@needs_ffmpeg
def test_realtime_paces_a_file(tmp_path):
    write_wav(str(tmp_path / "a.wav"), tone(1.5))
    src = FileSource(str(tmp_path / "a.wav"), realtime=True)
    assert src.live
    t0 = time.monotonic()
    n = len(read_all(src))
    # ffmpeg -re may burst the first half second; the rest comes at real-time pace
    assert n == 24000 and time.monotonic() - t0 > 0.8


@needs_ffmpeg
def test_close_from_another_thread_ends_the_iteration(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000:duration=60", str(tmp_path / "a.wav"))
    src = FileSource(str(tmp_path / "a.wav"), realtime=True)
    threading.Timer(0.5, src.close).start()
    t0 = time.monotonic()
    n = len(read_all(src))  # no error: a closed source just ends
    assert time.monotonic() - t0 < 5 and 0 < n < 10 * SAMPLE_RATE


@needs_ffmpeg
def test_file_errors_are_source_errors(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio at all\n" * 10)
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x64", str(tmp_path / "video.mp4"))
    cases = {str(tmp_path / "missing.wav"): "not found", str(tmp_path / "empty.wav"): "empty",
             str(tmp_path): "folder", str(tmp_path / "text.wav"): "cannot decode",
             str(tmp_path / "video.mp4"): "no audio stream", "": "no file"}
    for path, words in cases.items():
        with pytest.raises(SourceError, match=words):
            FileSource(path)


def test_missing_ffmpeg_is_one_clear_error(tmp_path, monkeypatch):
    write_wav(str(tmp_path / "a.wav"), tone(0.2))
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without ffmpeg
    with pytest.raises(RnntError, match="ffmpeg was not found"):
        FileSource(str(tmp_path / "a.wav"))


# ----------------------------------------------------------------------------------------------------
# Resampling (microphones that cannot capture at 16 kHz)


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000])
def test_streaming_resampler_matches_resample_poly_in_any_blocks(rate, rng):
    from scipy.signal import resample_poly

    x = tone(1.0, rate, 700.0) + (rng.standard_normal(rate) * 0.01).astype(np.float32)
    whole = StreamingResampler(rate).accept(x)
    r = StreamingResampler(rate)
    cuts = np.sort(rng.integers(0, len(x), 30))
    pieces = [r.accept(p) for p in np.split(x, cuts)]
    blocks = np.concatenate(pieces)
    np.testing.assert_array_equal(blocks, whole)
    assert r.position == len(blocks)
    ref = resample_poly(x, r.up, r.down)
    n = len(blocks)
    assert len(ref) - n <= 21  # only the filter's look-ahead (10 input samples) waits for more input
    np.testing.assert_allclose(blocks[: n - 5], ref[: n - 5], atol=2e-5)


# ----------------------------------------------------------------------------------------------------
# URLs (errors; the live HLS path is in tests/test_live.py)


def test_dead_and_non_media_urls_are_one_line_errors(tmp_path):
    import socket

    from tests.test_live import http_server

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    with pytest.raises(SourceError, match="cannot open") as e:
        UrlSource(f"http://127.0.0.1:{dead}/live.m3u8")
    assert "\n" not in str(e.value)
    (tmp_path / "page.html").write_text("<html><body>no media here</body></html>")
    with http_server(tmp_path) as port:
        with pytest.raises(SourceError) as e:
            UrlSource(f"http://127.0.0.1:{port}/page.html")
    assert "\n" not in str(e.value) and "Unsupported URL" in str(e.value)


# ----------------------------------------------------------------------------------------------------
# The microphone, through a PulseAudio virtual microphone


@pytest.fixture(scope="session")
def virtual_mic(tmp_path_factory):
    """Environment variables of a private PulseAudio whose default source hears sink ``vsink``."""
    missing = [b for b in ("pulseaudio", "pactl", "paplay") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install pulseaudio pulseaudio-utils "
                    "libasound2-plugins)")
    runtime = tmp_path_factory.mktemp("pulse_runtime")
    os.chmod(runtime, 0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), PULSE_SERVER=f"unix:{runtime}/pulse/native",
               PULSE_STATE_PATH=str(runtime / "state"), PULSE_SOURCE="vsink.monitor", PULSE_SINK="vsink")
    daemon = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "-n", "--exit-idle-time=-1", "--use-pid-file=no", "--log-target=stderr",
         "--load=module-native-protocol-unix auth-anonymous=1",
         "--load=module-null-sink sink_name=vsink rate=16000 channels=1 format=s16le"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0:
                break
            if daemon.poll() is not None:
                pytest.fail(f"pulseaudio did not start: {daemon.stderr.read().decode()[-1000:]}")
            time.sleep(0.1)
        subprocess.run(["pactl", "set-default-source", "vsink.monitor"], env=env, check=True)
        subprocess.run(["pactl", "set-default-sink", "vsink"], env=env, check=True)
        yield env
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


_CAPTURE = """
import sys, threading, numpy as np
from rnnt.sources import MicrophoneSource
src = MicrophoneSource("", 0.1, 10.0, int(sys.argv[2]))
threading.Thread(target=lambda: (sys.stdin.readline(), src.close()), daemon=True).start()
blocks = []
for b in src:
    if not blocks:
        print("capturing", flush=True)
    blocks.append(b)
np.save(sys.argv[1], np.concatenate([b.samples for b in blocks]))
print(src.stats.overflows, src.stats.dropped_blocks, src.rate,
      all(b.position + len(b.samples) == c.position for b, c in zip(blocks, blocks[1:])), flush=True)
"""


def capture(env, tmp_path, played: np.ndarray, rate: int) -> tuple[np.ndarray, list[str]]:
    """Play ``played`` (16 kHz) into the virtual microphone while a MicrophoneSource at ``rate`` captures;
    return the 16 kHz samples it delivered and [overflows, dropped blocks, rate, positions contiguous]."""
    # the null sink rewinds when a stream starts, so its monitor misses up to ~0.5 s of the start: lead silence
    write_wav(str(tmp_path / "x.wav"), np.concatenate([np.zeros(SAMPLE_RATE, np.float32), played]))
    proc = subprocess.Popen([sys.executable, "-c", _CAPTURE, str(tmp_path / "got.npy"), str(rate)], cwd=REPO,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "capturing", proc.stderr.read()
        subprocess.run(["paplay", "--device=vsink", str(tmp_path / "x.wav")], env=env, check=True)
        time.sleep(1.5)  # the capture side runs a little behind the player
        proc.stdin.write("\n")
        proc.stdin.flush()
        counters = proc.stdout.readline().split()
        assert proc.wait(timeout=20) == 0, proc.stderr.read()
    finally:
        proc.kill()
    return np.load(tmp_path / "got.npy"), counters


def test_microphone_hears_the_virtual_mic_sample_exactly(virtual_mic, tmp_path, rng):
    x = (tone(1.0) + rng.standard_normal(SAMPLE_RATE).astype(np.float32) * 0.05)
    x = np.round(x * 32768) / 32768  # exactly representable as 16-bit PCM
    got, counters = capture(virtual_mic, tmp_path, x, 0)
    assert counters == ["0", "0", "16000", "True"]
    k = int(np.argmax(np.correlate(got, x[:4000], "valid")))
    assert len(got) >= k + len(x)
    np.testing.assert_allclose(got[k:k + len(x)], x, atol=1.01 / 32768)  # the same 16-bit samples
    assert np.abs(got[:k]).max(initial=0) < 1e-3  # silence before


def test_microphone_at_44k_is_resampled_to_16k(virtual_mic, tmp_path):
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    x = (0.3 * np.sin(2 * np.pi * (200 * t + 1400 * t ** 2))).astype(np.float32)  # a 200 -> 3000 Hz chirp
    got, counters = capture(virtual_mic, tmp_path, x, 44100)
    assert counters == ["0", "0", "44100", "True"]
    k = int(np.argmax(np.correlate(got, x[:4000], "valid")))
    seg = got[k + 400:k + len(x) - 400]  # PulseAudio's resampler (16 -> 44.1 kHz), then ours back
    assert np.sqrt(np.mean((seg - x[400:-400]) ** 2)) < 0.05 * np.sqrt(np.mean(x ** 2))


def test_list_devices_and_unknown_device(virtual_mic):
    code = ("from rnnt.sources import list_input_devices, MicrophoneSource\n"
            "d = list_input_devices(); print(sum(x['default'] for x in d), len(d))\n"
            "try:\n    MicrophoneSource('no such device 42')\nexcept Exception as e:\n    print(type(e).__name__, e)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=virtual_mic, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert first.split()[0] == "1" and int(first.split()[1]) >= 1
    assert second.startswith("SourceError unknown input device 'no such device 42'")


def test_list_input_devices_in_process_returns_dicts():
    try:
        devices = list_input_devices()
    except SourceError as e:  # no PortAudio on this machine: the error says how to install it
        assert "PortAudio" in str(e) or "sounddevice" in str(e) or "devices" in str(e)
        return
    assert all({"index", "name", "hostapi", "channels", "rate", "default"} <= set(d) for d in devices)
