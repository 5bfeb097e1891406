"""Errors raised by the rnnt library.

Every user-facing failure is an ``RnntError`` whose message names what failed, the offending value
and the fix. Entry points catch ``RnntError`` and print it on one line.
"""


class RnntError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(RnntError):
    """A configuration value or flag is invalid or inconsistent."""


class AudioError(RnntError):
    """Audio could not be read, decoded or captured."""


class CheckpointError(RnntError):
    """A checkpoint or exported model is missing, corrupt or of the wrong kind."""


class ExportError(RnntError):
    """ONNX export or verification failed."""


class DataError(RnntError):
    """A manifest or dataset is unusable as a whole."""


class SourceError(AudioError):
    """A live source (microphone, URL, ffmpeg pipe) failed."""
