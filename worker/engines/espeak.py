"""espeak-ng through ctypes, on the library and data shipped by ``espeakng_loader``.

espeak-ng keeps all its state (voice, callback, buffers) in process globals, so every
call into the library happens on ONE dedicated thread owned by a process-wide
``_Runtime``; engines only submit jobs to it. The library is loaded with
``RTLD_LOCAL``: piper's ``espeakbridge`` extension statically links its own espeak-ng
exporting the same symbol names, and loading ours with ``RTLD_GLOBAL`` makes piper
bind to it and crash (segfault measured). With ``RTLD_LOCAL`` both copies coexist,
each with its own state, even when used concurrently from two threads.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import AsyncGenerator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import espeakng_loader

from worker.engines.base import EngineError, UnsupportedVoice, Voice
from worker.engines.threaded import Emit, iterate_in_thread

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_CHARS_UTF8 = 1  # plain UTF-8 text: no SSML, no [[phoneme]] input
_POS_CHARACTER = 1
_EE_OK = 0
_BUFFER_MS = 60  # audio per synth callback: the streaming chunk size
#: Chunks a stream may hold that its consumer has not read yet: 1,024 x 60 ms = 61 s of
#: audio (2.7 MB), more than a whole piece of text (at most 300 characters, about 20 s of
#: English). The one espeak thread serves every session, so it must never wait on one
#: session's back-pressure (its Playout full: 3 s ahead): that held up every other
#: espeak session behind it (1.7 s first audio, gaps; measured by bench.offline_capacity).
#: espeak synthesizes ~500x real time, so a piece is buffered whole in milliseconds.
MAX_PENDING_CHUNKS = 1024

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _VoiceStruct(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


@dataclass(frozen=True)
class _Catalog:
    """What the library offers; immutable once built, so readable from any thread."""

    sample_rate: int
    by_language: dict[str, str]  # lower-case language tag -> voice identifier
    by_name: dict[str, str]  # lower-case identifier / short name -> voice identifier


def _parse_languages(address: int) -> list[tuple[int, str]]:
    # espeak_VOICE.languages: repeated (priority byte, NUL-terminated name), then a 0 byte.
    out: list[tuple[int, str]] = []
    while (priority := ctypes.string_at(address, 1)[0]) != 0:
        name = ctypes.string_at(address + 1)
        out.append((priority, name.decode("ascii", "replace").lower()))
        address += len(name) + 2
    return out


class _Runtime:
    """The one espeak-ng instance of the process and the one thread allowed to call it.

    Invariant: ``_lib``, ``_emit``, ``_error`` and the library itself are used only on
    ``executor``'s single thread. ``catalog`` is a future completed by that thread.
    """

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
        self._lib: ctypes.CDLL | None = None
        self._emit: Emit | None = None
        self._error: BaseException | None = None
        # Keep the C callback object alive as long as the library may call it.
        self._callback = _SYNTH_CALLBACK(self._on_audio)
        self.catalog: Future[_Catalog] = self.executor.submit(self._initialize)

    def _initialize(self) -> _Catalog:
        try:
            lib = ctypes.CDLL(str(espeakng_loader.get_library_path()), mode=ctypes.RTLD_LOCAL)
        except OSError as exc:
            raise EngineError("could not load libespeak-ng") from exc
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceStruct))
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        data = str(espeakng_loader.get_data_path()).encode()
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data, _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EngineError("espeak-ng failed to initialize")
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

        by_language: dict[str, tuple[int, int, str]] = {}
        by_name: dict[str, str] = {}
        voices = lib.espeak_ListVoices(None)
        index = 0
        while voices[index]:
            voice = voices[index].contents
            identifier = (voice.identifier or b"").decode()
            by_name[identifier.lower()] = identifier
            by_name.setdefault(identifier.rsplit("/", 1)[-1].lower(), identifier)
            for priority, language in _parse_languages(voice.languages):
                # Lower priority number = better match; ties keep espeak's list order.
                best = by_language.get(language)
                if best is None or (priority, index) < best[:2]:
                    by_language[language] = (priority, index, identifier)
            index += 1
        return _Catalog(rate, {k: v[2] for k, v in by_language.items()}, by_name)

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int) -> int:
        # Called by espeak_Synth on the espeak thread. Returning 1 aborts synthesis.
        # Exceptions must not escape into C (ctypes would print and continue).
        try:
            if count > 0 and wav and self._emit is not None:
                return 0 if self._emit(ctypes.string_at(wav, count * 2)) else 1
            return 0
        except BaseException as exc:
            self._error = exc
            return 1

    def synthesize(self, text: str, voice_name: str, emit: Emit) -> None:
        """Blocking: speak ``text`` with ``voice_name``, passing audio to ``emit``."""
        lib = self._lib
        if lib is None:  # only reachable if initialization failed
            self.catalog.result()
            raise EngineError("espeak-ng is not initialized")
        if lib.espeak_SetVoiceByName(voice_name.encode()) != _EE_OK:
            raise EngineError(f"espeak-ng could not load voice {voice_name!r}")
        encoded = text.replace("\0", " ").encode() + b"\0"
        self._emit, self._error = emit, None
        try:
            status = lib.espeak_Synth(
                encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
        finally:
            self._emit = None
        if self._error is not None:
            raise self._error
        if status != _EE_OK:
            raise EngineError(f"espeak-ng synthesis failed (code {status})")


_runtime: _Runtime | None = None
_runtime_lock = threading.Lock()


def _get_runtime() -> _Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = _Runtime()
        return _runtime


_EXAMPLES = "en-US, en-GB, de, fr, es, pt-BR, ko, ja, cmn, ru"


class EspeakEngine:
    """Robotic but very fast offline engine: espeak-ng, 22,050 Hz, ~60 ms chunks.

    All instances share the process's single espeak-ng instance and its thread, so
    syntheses run one after another. ``voice_id`` may name an espeak voice
    (``en-us``, ``gmw/en-US``, ``ko``) and then overrides the language. The library
    starts loading (a few ms) on construction; ``resolve_voice`` and ``sample_rate``
    wait for it if it has not finished.
    """

    name = "espeak"

    def __init__(self, *, max_pending: int = MAX_PENDING_CHUNKS) -> None:
        self._runtime = _get_runtime()
        self._max_pending = max_pending

    def _catalog(self) -> _Catalog:
        return self._runtime.catalog.result()

    def sample_rate(self, voice: Voice) -> int:
        return self._catalog().sample_rate

    def resolve_voice(self, language: str, voice_id: str) -> Voice:
        catalog = self._catalog()
        if voice_id:
            identifier = catalog.by_name.get(voice_id.strip().lower())
            if identifier is None:
                raise UnsupportedVoice(
                    f"espeak has no voice {voice_id!r}; use a voice like en-us, de, ko, "
                    "or leave voice_id empty to pick one from the language"
                )
            return Voice(voice_id=identifier, language=language)
        subtags = language.strip().replace("_", "-").lower().split("-")
        # BCP47 fallback: en-US-x-foo -> en-us-x -> en-us -> en.
        for end in range(len(subtags), 0, -1):
            identifier = catalog.by_language.get("-".join(subtags[:end]))
            if identifier is not None:
                return Voice(voice_id=identifier, language=language)
        raise UnsupportedVoice(
            f"espeak has no voice for language {language!r}; it offers "
            f"{len(catalog.by_language)} language tags, e.g. {_EXAMPLES}"
        )

    async def prepare(self, voice: Voice) -> None:
        await asyncio.shield(asyncio.wrap_future(self._runtime.catalog))

    def synthesize(self, text: str, voice: Voice) -> AsyncGenerator[bytes, None]:
        return iterate_in_thread(
            partial(self._runtime.synthesize, text, voice.voice_id),
            executor=self._runtime.executor,
            max_pending=self._max_pending,
        )
