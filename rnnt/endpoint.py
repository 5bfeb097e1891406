"""Endpoint rules: when does a live utterance end? A pure function of three durations in seconds."""

from __future__ import annotations

from rnnt.config import EndpointConfig


def is_endpoint(cfg: EndpointConfig, trailing_silence: float, utterance_length: float, has_speech: bool) -> bool:
    """True when the current utterance should be closed.

    Args:
        trailing_silence: seconds since the last decoded token (or since the utterance began).
        utterance_length: seconds since the utterance began.
        has_speech: whether any token was decoded in this utterance.
    """
    if not cfg.enabled:
        return False
    if utterance_length >= cfg.max_utterance:
        return True
    if has_speech:
        return trailing_silence >= cfg.silence_after_speech
    return trailing_silence >= cfg.silence_no_speech
