"""Admission of a create: the worker's session bound and each offline voice family's
real-time capacity (worker/admission.py), decided from the live sessions alone."""

from __future__ import annotations

import pytest

from worker.admission import Capacity, Usage, refusal
from worker.config import Settings
from worker.engines.offline import VoiceFamily, voice_family
from worker.errors import ErrorCode
from worker.model import Provider

PIPER = Usage(Provider.OFFLINE, "en_US-joe-medium")
ESPEAK = Usage(Provider.OFFLINE, "espeak:gmw/en-US")
CLOUD = Usage(Provider.ELEVENLABS, "EXAVITQu4vr4xnSDxMaL")
BOUNDED = Capacity(100, {VoiceFamily.PIPER: 3, VoiceFamily.ESPEAK: 5})


def test_the_family_of_an_offline_voice_is_its_engine() -> None:
    assert voice_family("en_US-joe-medium") is VoiceFamily.PIPER
    assert voice_family("espeak") is VoiceFamily.ESPEAK
    assert voice_family("espeak:ko") is VoiceFamily.ESPEAK
    assert voice_family("espeakish") is VoiceFamily.PIPER  # not the espeak prefix
    assert CLOUD.offline_family is None and ESPEAK.offline_family is VoiceFamily.ESPEAK


def test_a_family_below_its_capacity_is_admitted() -> None:
    assert refusal(BOUNDED, [PIPER, PIPER, ESPEAK, CLOUD], PIPER) is None


def test_a_full_family_is_refused_unavailable_saying_why_and_what_is_allowed() -> None:
    error = refusal(BOUNDED, [PIPER, CLOUD, PIPER, PIPER], PIPER)
    assert error is not None and error.code is ErrorCode.UNAVAILABLE
    assert "offline piper voices serve at most 3 sessions at once" in error.message
    assert "(3 in use)" in error.message
    assert "try again later" in error.message and "espeak voice" in error.message
    full_espeak = refusal(BOUNDED, [ESPEAK] * 5, Usage(Provider.OFFLINE, "espeak:ko"))
    assert full_espeak is not None and "at most 5" in full_espeak.message
    assert "cloud provider" in full_espeak.message


def test_a_full_family_leaves_the_other_family_and_cloud_providers_open() -> None:
    live = [PIPER] * 3
    assert refusal(BOUNDED, live, ESPEAK) is None
    assert refusal(BOUNDED, live, CLOUD) is None
    assert refusal(BOUNDED, [ESPEAK] * 5, PIPER) is None


def test_zero_or_a_missing_family_is_unbounded() -> None:
    unbounded = Capacity(100, {VoiceFamily.PIPER: 0})
    assert refusal(unbounded, [PIPER] * 99, PIPER) is None
    assert refusal(unbounded, [ESPEAK] * 99, ESPEAK) is None


@pytest.mark.parametrize("wanted", [PIPER, ESPEAK, CLOUD])
def test_the_session_bound_applies_to_every_provider_first(wanted: Usage) -> None:
    capacity = Capacity(2, {VoiceFamily.PIPER: 3, VoiceFamily.ESPEAK: 5})
    error = refusal(capacity, [CLOUD, CLOUD], wanted)
    assert error is not None and error.code is ErrorCode.UNAVAILABLE
    assert "at capacity" in error.message and "(2 sessions)" in error.message
    assert refusal(capacity, [CLOUD], wanted) is None


def test_capacity_per_family_is_a_setting() -> None:
    settings = Settings.from_env(
        {"SPEAKING_OFFLINE_PIPER_SESSIONS": "7", "SPEAKING_OFFLINE_ESPEAK_SESSIONS": "0"}
    )
    assert (settings.offline_piper_sessions, settings.offline_espeak_sessions) == (7, 0)
    capacity = Capacity.from_settings(settings)
    assert refusal(capacity, [PIPER] * 7, PIPER) is not None
    assert refusal(capacity, [ESPEAK] * 400, ESPEAK) is None  # 0: unbounded
    defaults = Capacity.from_settings(Settings())
    assert defaults.offline == {VoiceFamily.PIPER: 4, VoiceFamily.ESPEAK: 150}
