"""The engines this worker can offer, from its settings and each SDK's standard
credentials. A provider without credentials is reported here, at start-up (with what
would configure it), and is refused at create: it never fails in the middle of a call."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from worker.config import Settings
from worker.engines.base import Engine
from worker.engines.elevenlabs import ElevenLabsEngine, ElevenLabsSettings
from worker.engines.gcp import GcpEngine, GcpSettings
from worker.engines.gcp import credentials_problem as gcp_problem
from worker.engines.offline import OfflineEngine
from worker.engines.polly import PollyEngine, PollySettings
from worker.engines.polly import credentials_problem as polly_problem
from worker.engines.providers import HOW_TO_CONFIGURE
from worker.engines.registry import EngineRegistry
from worker.model import Provider

log = logging.getLogger(__name__)


def build_engines(settings: Settings, env: Mapping[str, str] | None = None) -> EngineRegistry:
    env = os.environ if env is None else env
    engines: dict[Provider, Engine] = {
        Provider.OFFLINE: OfflineEngine(settings.offline_default_voice)
    }
    unconfigured: dict[str, str] = {}

    key = settings.elevenlabs_api_key or env.get("ELEVENLABS_API_KEY", "")
    if key:
        engines[Provider.ELEVENLABS] = ElevenLabsEngine(
            ElevenLabsSettings(
                api_key=key,
                base_url=settings.elevenlabs_base_url,
                model_id=settings.elevenlabs_model,
                mode=settings.elevenlabs_mode,
                max_connections=settings.provider_connections,
            )
        )
    else:
        unconfigured["elevenlabs"] = HOW_TO_CONFIGURE["elevenlabs"]

    gcp = GcpSettings(
        endpoint=settings.gcp_endpoint,
        insecure=settings.gcp_insecure,
        credentials_file=settings.gcp_credentials_file,
    )
    if (problem := gcp_problem(gcp)) is None:
        engines[Provider.GCP] = GcpEngine(gcp)
    else:
        unconfigured["gcp"] = problem

    polly = PollySettings(
        region=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url,
        access_key_id=settings.aws_access_key_id,
        secret_access_key=settings.aws_secret_access_key,
        max_connections=settings.provider_connections,
    )
    if (problem := polly_problem(polly)) is None:
        engines[Provider.AWS] = PollyEngine(polly)
    else:
        unconfigured["aws"] = problem

    for provider, how in unconfigured.items():
        log.warning("provider not configured", extra={"provider": provider, "how": how})
    fallbacks = [Provider(p.strip()) for p in settings.fallback_providers.split(",") if p.strip()]
    return EngineRegistry(engines, fallbacks, unconfigured)
