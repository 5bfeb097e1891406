"""What every entry point shares: the error wrapper and the default model path."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from absl import app

from rnnt.errors import RnntError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(REPO_ROOT, "models", "en_small", "model.pt")
DEFAULT_ONNX = os.path.join(REPO_ROOT, "models", "en_small", "onnx")


def model_path(flag_value: str, backend: str = "torch") -> str:
    """The ``--model`` value, or the shipped default model for ``backend``."""
    if flag_value:
        return flag_value
    return DEFAULT_ONNX if backend == "onnx" else DEFAULT_MODEL


def output_file(path: str, flag: str) -> None:
    """Check before any long work that ``--flag path`` can be written, making its folder; a one-line
    error names the flag. An existing file is left as it is until ``write_json`` replaces it."""
    from rnnt.errors import ConfigError

    def refused(why: str) -> ConfigError:
        return ConfigError(f"cannot write --{flag} {path}: {why}")

    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except FileExistsError as e:  # a file where a folder of the path should be
        raise refused("a file is in the way of its folder") from e
    except OSError as e:
        raise refused(e.strerror) from e
    if os.path.isdir(path):
        raise refused("it is a folder")
    if not os.access(path if os.path.exists(path) else parent, os.W_OK):
        raise refused("permission denied")


def write_json(path: str, obj, flag: str) -> None:
    """Write ``obj`` as JSON to ``path`` whole or not at all; a one-line error names the flag."""
    import json

    from rnnt.errors import ConfigError
    from rnnt.manifest import write_text_atomically

    try:
        write_text_atomically(path, json.dumps(obj, indent=1))
    except OSError as e:
        raise ConfigError(f"cannot write --{flag} {path}: {e.strerror}") from e


def _guarded(main: Callable[[list[str]], int | None]) -> Callable[[list[str]], None]:
    def wrapper(argv: list[str]) -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        try:
            code = main(argv)
        except RnntError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        sys.exit(code or 0)

    return wrapper


def run(main: Callable[[list[str]], int | None]) -> None:
    """``absl.app.run`` with one-line errors: RnntError -> 'error: ...' and exit 1; Ctrl-C -> one line."""
    try:
        app.run(_guarded(main))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
