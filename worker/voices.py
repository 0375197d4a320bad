"""The cloud providers' voices: which languages each speaks, and its default voice per
language (pure data and lookups, no I/O).

``voice_id`` passes through to the provider as the customer gave it; these tables only
decide a voice when none is given, refuse a language the provider cannot speak (with
the list it can), and seed ``GET /v1.0/speakings/voices`` (refreshed from the provider's
own list call when the worker has credentials).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.engines.base import UnsupportedVoice


@dataclass(frozen=True)
class VoiceInfo:
    voice_id: str
    name: str
    languages: tuple[str, ...]  # BCP 47 tags the voice is listed for
    #: Google: the voice can stream (Chirp 3 HD). Polly: the engines it supports.
    streaming: bool = False
    engines: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"voice_id": self.voice_id, "name": self.name}
        out["languages"] = list(self.languages)
        if self.streaming:
            out["streaming"] = True
        if self.engines:
            out["engines"] = list(self.engines)
        return out


@dataclass(frozen=True)
class Catalog:
    """One provider's languages (locale tags as the provider writes them) and voices."""

    provider: str
    languages: tuple[str, ...]
    defaults: dict[str, str]  # locale -> default voice id
    voices: tuple[VoiceInfo, ...] = field(default=())
    aliases: dict[str, str] = field(default_factory=dict)  # lower-case tag -> locale

    def locale_for(self, language: str) -> str:
        """The provider's locale for a BCP 47 tag: exact (any case), then the first locale
        of the same primary language. Raises UnsupportedVoice with the list it speaks."""
        wanted = language.replace("_", "-").lower()
        wanted = self.aliases.get(wanted, wanted)
        by_lower = {locale.lower(): locale for locale in self.languages}
        if wanted in by_lower:
            return by_lower[wanted]
        head = wanted.split("-")[0]
        primary = self.aliases.get(head, head).split("-")[0]
        for locale in self.languages:
            if locale.lower().split("-")[0] == primary:
                return locale
        raise UnsupportedVoice(
            f"{self.provider} cannot speak {language!r}; it speaks {', '.join(self.languages)}"
        )

    def default_voice(self, language: str) -> str:
        locale = self.locale_for(language)
        return self.defaults.get(locale) or self.defaults[_first_default(self, locale)]

    def info(self, voice_id: str) -> VoiceInfo | None:
        return next((v for v in self.voices if v.voice_id == voice_id), None)

    def listing(self, language: str = "") -> list[dict[str, object]]:
        """Voices for ``GET /speakings/voices`` (for one language, if given)."""
        if not language:
            return [v.to_dict() for v in self.voices]
        locale = self.locale_for(language)
        primary = locale.split("-")[0].lower()
        return [
            v.to_dict()
            for v in self.voices
            if any(
                lang.lower() == locale.lower() or lang.lower() == primary for lang in v.languages
            )
        ]


# Chinese is written zh-CN by customers and cmn-CN by Google and Polly.
_MANDARIN = {"zh-cn": "cmn-CN", "zh": "cmn", "zh-hans-cn": "cmn-CN", "zh-hans": "cmn"}


def _first_default(catalog: Catalog, locale: str) -> str:
    primary = locale.split("-")[0]
    return next(loc for loc in catalog.defaults if loc.split("-")[0] == primary)


# -- ElevenLabs -----------------------------------------------------------------------------
# Voices are not tied to a language: eleven_flash_v2_5 speaks these 32 (ISO 639-1, as its
# language_code takes them). Premade voices only; the legacy Rachel (21m00Tcm4TlvDq8ikWAM,
# the document's example) is accepted when asked for but never a default.
_EL_LANGUAGES = [
    "en",
    "ja",
    "zh",
    "de",
    "hi",
    "fr",
    "ko",
    "pt",
    "it",
    "es",
    "id",
    "nl",
    "tr",
    "fil",
    "pl",
    "sv",
    "bg",
    "ro",
    "ar",
    "cs",
    "el",
    "fi",
    "hr",
    "ms",
    "sk",
    "da",
    "ta",
    "uk",
    "ru",
    "hu",
    "no",
    "vi",
]
_SARAH, _GEORGE, _ARIA = "EXAVITQu4vr4xnSDxMaL", "JBFqnCBsd6RMkjVDRZzb", "9BWtsMINqrJLrRacOk9x"
_LAURA, _BRIAN, _DANIEL = "FGY2WhTYpPnrIDTdsKH5", "nPczCjzI2devNBz1zQrb", "onwK4e9ZLuTAKqWW03F9"
ELEVENLABS = Catalog(
    provider="elevenlabs",
    languages=tuple(_EL_LANGUAGES),
    defaults={"en": _SARAH, **{lang: _ARIA for lang in _EL_LANGUAGES if lang != "en"}},
    voices=tuple(
        VoiceInfo(voice_id, name, tuple(_EL_LANGUAGES))
        for voice_id, name in (
            (_SARAH, "Sarah"),
            (_GEORGE, "George"),
            (_ARIA, "Aria"),
            (_LAURA, "Laura"),
            (_BRIAN, "Brian"),
            (_DANIEL, "Daniel"),
        )
    ),
)
#: British English gets a British voice.
ELEVENLABS_REGIONAL = {"en-gb": _GEORGE}


def elevenlabs_voice(language: str) -> str:
    return ELEVENLABS_REGIONAL.get(language.lower()) or ELEVENLABS.default_voice(language)


# -- Google Cloud TTS -----------------------------------------------------------------------
# Chirp 3 HD voices stream (lowest latency), so they are the defaults; WaveNet, Neural2 and
# Standard voices are used through the unary call when asked for by name.
_GCP_LOCALES = [
    "en-US",
    "en-GB",
    "en-AU",
    "en-IN",
    "es-ES",
    "es-US",
    "fr-FR",
    "fr-CA",
    "de-DE",
    "it-IT",
    "pt-BR",
    "pt-PT",
    "ja-JP",
    "ko-KR",
    "cmn-CN",
    "hi-IN",
    "nl-NL",
    "pl-PL",
    "ru-RU",
    "tr-TR",
    "sv-SE",
    "da-DK",
    "fi-FI",
    "nb-NO",
    "id-ID",
    "vi-VN",
    "th-TH",
    "ar-XA",
    "uk-UA",
    "cs-CZ",
    "el-GR",
    "hu-HU",
    "ro-RO",
    "bn-IN",
    "ta-IN",
    "te-IN",
    "mr-IN",
    "gu-IN",
    "kn-IN",
    "ml-IN",
]
_GCP_LISTED = [
    "en-US",
    "en-GB",
    "es-ES",
    "fr-FR",
    "de-DE",
    "it-IT",
    "pt-BR",
    "ja-JP",
    "ko-KR",
    "cmn-CN",
    "hi-IN",
]
GCP = Catalog(
    provider="gcp",
    languages=tuple(_GCP_LOCALES),
    defaults={locale: f"{locale}-Chirp3-HD-Charon" for locale in _GCP_LOCALES},
    aliases={k: v.lower() for k, v in _MANDARIN.items()},
    voices=tuple(
        VoiceInfo(f"{locale}-{family}", f"{locale}-{family}", (locale,), family.startswith("Chirp"))
        for locale in _GCP_LISTED
        for family in ("Chirp3-HD-Charon", "Chirp3-HD-Kore", "Neural2-A", "Wavenet-A", "Standard-A")
    ),
)


def gcp_streams(voice_id: str) -> bool:
    """Only Chirp 3 HD (and Chirp HD) voices can use streaming_synthesize."""
    return "-Chirp3-HD-" in voice_id or "-Chirp-HD-" in voice_id


# -- Amazon Polly -----------------------------------------------------------------------------
_NS = ("neural", "standard")
_POLLY_VOICES = (
    VoiceInfo("Joanna", "Joanna", ("en-US",), engines=_NS),
    VoiceInfo("Matthew", "Matthew", ("en-US",), engines=_NS),
    VoiceInfo("Amy", "Amy", ("en-GB",), engines=_NS),
    VoiceInfo("Lucia", "Lucia", ("es-ES",), engines=_NS),
    VoiceInfo("Lupe", "Lupe", ("es-US",), engines=_NS),
    VoiceInfo("Lea", "Lea", ("fr-FR",), engines=_NS),
    VoiceInfo("Vicki", "Vicki", ("de-DE",), engines=_NS),
    VoiceInfo("Bianca", "Bianca", ("it-IT",), engines=_NS),
    VoiceInfo("Camila", "Camila", ("pt-BR",), engines=_NS),
    VoiceInfo("Kazuha", "Kazuha", ("ja-JP",), engines=("neural",)),
    VoiceInfo("Takumi", "Takumi", ("ja-JP",), engines=_NS),
    VoiceInfo("Seoyeon", "Seoyeon", ("ko-KR",), engines=_NS),
    VoiceInfo("Zhiyu", "Zhiyu", ("cmn-CN",), engines=_NS),
    VoiceInfo("Kajal", "Kajal", ("hi-IN", "en-IN"), engines=("neural",)),
    VoiceInfo("Laura", "Laura", ("nl-NL",), engines=("neural",)),
    VoiceInfo("Hala", "Hala", ("ar-AE",), engines=("neural",)),
)
POLLY = Catalog(
    provider="aws",
    languages=tuple(dict.fromkeys(lang for v in _POLLY_VOICES for lang in v.languages)),
    defaults={
        "en-US": "Joanna",
        "en-GB": "Amy",
        "en-IN": "Kajal",
        "es-ES": "Lucia",
        "es-US": "Lupe",
        "fr-FR": "Lea",
        "de-DE": "Vicki",
        "it-IT": "Bianca",
        "pt-BR": "Camila",
        "ja-JP": "Kazuha",
        "ko-KR": "Seoyeon",
        "cmn-CN": "Zhiyu",
        "hi-IN": "Kajal",
        "nl-NL": "Laura",
        "ar-AE": "Hala",
    },
    voices=_POLLY_VOICES,
    aliases={k: v.lower() for k, v in _MANDARIN.items()},
)

CATALOGS = {catalog.provider: catalog for catalog in (ELEVENLABS, GCP, POLLY)}
