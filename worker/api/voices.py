"""``GET /v1.0/speakings/voices?provider=&language=``: the voices a provider offers.

From the provider's own voice list when a worker with credentials has published it in
Redis (``speaking:voices:<provider>``, refreshed by the workers), else from the built-in
table (worker/voices.py). Each listing says which, and which voice a create with no
``voice_id`` would get.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from worker.api.problems import problem
from worker.engines.base import UnsupportedVoice
from worker.model import Provider
from worker.voices import CATALOGS

OFFLINE_VOICES = [
    {"voice_id": "en_US-joe-medium", "name": "Joe (piper)", "languages": ["en"]},
    {"voice_id": "espeak", "name": "espeak-ng, from the language", "languages": ["*"]},
]


async def list_voices(request: web.Request, redis: Any, prefix: str, default: str) -> web.Response:
    provider = request.query.get("provider") or default
    language = request.query.get("language", "")
    allowed = [p.value for p in Provider]
    if provider not in allowed:
        return problem(
            400,
            "invalid_argument",
            f"provider {provider!r} is not one of {', '.join(allowed)}",
            allowed=allowed,
        )
    if provider == Provider.OFFLINE.value:
        return web.json_response(
            {
                "provider": provider,
                "language": language,
                "source": "built-in",
                "default_voice_id": "en_US-joe-medium"
                if language.startswith("en") or not language
                else "espeak",
                "voices": OFFLINE_VOICES,
            }
        )
    catalog = CATALOGS[provider]
    try:
        default_voice = catalog.default_voice(language) if language else ""
        voices = catalog.listing(language)
    except UnsupportedVoice as exc:
        return problem(400, "invalid_argument", str(exc), allowed=list(catalog.languages))
    source = "built-in"
    published = await redis.get(f"{prefix}:voices:{provider}")
    if published:
        listed = json.loads(published)
        if language:
            primary = language.split("-")[0].lower()
            listed = [
                v
                for v in listed
                if any(
                    str(lang).lower().split("-")[0] == primary for lang in v.get("languages", [])
                )
            ] or voices
        voices, source = listed, "provider"
    return web.json_response(
        {
            "provider": provider,
            "language": language,
            "source": source,
            "default_voice_id": default_voice,
            "voices": voices,
        }
    )
