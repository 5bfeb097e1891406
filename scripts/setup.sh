#!/usr/bin/env bash
# Install what rnnt needs: Debian packages (audio tools, TTS engines, PulseAudio for the virtual
# microphone test, qemu-user for the int8 test on an emulated CPU without VNNI) and the Python requirements. Idempotent; run as root or with sudo available.
# Usage: scripts/setup.sh [--corpus]   (--corpus adds the neural TTS voices for corpus synthesis)
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PACKAGES=(ffmpeg espeak-ng flite festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k sox
  libportaudio2 libpulse0 pulseaudio pulseaudio-utils libasound2-plugins fortunes wamerican dict-gcide qemu-user)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check -r requirements.txt
if [ "${1:-}" = "--corpus" ]; then
  $PY -m pip install -q --disable-pip-version-check -r requirements-corpus.txt
fi
echo "setup done"
