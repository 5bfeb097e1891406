"""Every absl flag, defined once, from the config dataclasses.

A flag is named exactly like its dataclass field; its default is the field's default and its help is the
field's trailing comment in the source. A field name shared by two dataclasses (``n_mels``) is one flag
feeding both. Entry points call ``define(...)`` for the configs they use, then ``config_from_flags``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import sys
import typing

from absl import flags
from absl.flags import _helpers

FLAGS = flags.FLAGS
# Attribute flags defined here to the entry point that calls ``define`` so its --help lists them.
_helpers.disclaim_module_ids.add(id(sys.modules[__name__]))

# Flags that are not config fields, shared by several entry points.
_EXTRA: dict[str, tuple] = {
    "model": ("string", "", "model checkpoint (.pt) or exported ONNX folder; empty = the shipped default model"),
    "backend": ("enum", "torch", "inference engine: torch or onnx", ["torch", "onnx"]),
    "threads": ("integer", 1, "CPU threads for inference (torch intra-op or onnxruntime intra-op)"),
    "resume": ("bool", False, "continue from the newest checkpoint in exp_dir (weights, optimizer, step, data position)"),
    "init": ("string", "", "initialise weights from this checkpoint (fine-tuning); optimizer and step start fresh"),
}


@functools.lru_cache(maxsize=None)
def _field_help(cls: type) -> dict[str, str]:
    """Trailing ``# comments`` of a dataclass's field lines, by field name."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for line in src.splitlines():
        m = re.match(r"\s+(\w+):\s*[^=]+=.*?#\s*(.+)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _define_one(name: str, kind: str, default, help_text: str, extra=None) -> None:
    if name in FLAGS:
        return
    if kind == "bool":
        flags.DEFINE_bool(name, default, help_text)
    elif kind == "integer":
        flags.DEFINE_integer(name, default, help_text)
    elif kind == "float":
        flags.DEFINE_float(name, default, help_text)
    elif kind == "enum":
        flags.DEFINE_enum(name, default, extra, help_text)
    else:
        flags.DEFINE_string(name, default, help_text)


def define(*classes: type, extra: typing.Iterable[str] = (), only: typing.Iterable[str] | None = None) -> None:
    """Define a flag for every field of ``classes`` (or just the fields named in ``only``) plus the named
    ``extra`` flags. Idempotent."""
    only = set(only) if only is not None else None
    for cls in classes:
        hints = typing.get_type_hints(cls)
        helps = _field_help(cls)
        for f in dataclasses.fields(cls):
            if f.name in FLAGS or (only is not None and f.name not in only):
                continue
            t = hints[f.name]
            kind = {bool: "bool", int: "integer", float: "float"}.get(t, "string")
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            _define_one(f.name, kind, default, helps.get(f.name, f"{cls.__name__}.{f.name}"))
    for name in extra:
        kind, default, help_text, *rest = _EXTRA[name]
        _define_one(name, kind, default, help_text, rest[0] if rest else None)


def config_from_flags(cls: type, **overrides):
    """Build ``cls`` from the parsed flags (call after absl has parsed argv)."""
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(cls) if f.name in FLAGS}
    values.update(overrides)
    return cls(**values)


def flag_was_set(name: str) -> bool:
    """True when the flag was given on the command line or in a flagfile."""
    return name in FLAGS and FLAGS[name].present > 0


def flagfile_text() -> str:
    """The flags that differ from their defaults, as flagfile lines (stored in checkpoints)."""
    lines = []
    for name in sorted(FLAGS):
        fl = FLAGS[name]
        if fl.present and name not in ("flagfile", "resume"):
            lines.append(fl.serialize())
    return "\n".join(lines) + "\n"
