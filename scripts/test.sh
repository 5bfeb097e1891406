#!/usr/bin/env bash
# Set up (apt + pip) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --corpus
exec ${PYTHON:-python3} -m pytest -q -p no:cacheprovider tests "$@"
