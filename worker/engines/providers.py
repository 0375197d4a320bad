"""What each provider needs to be configured, said the same way by the worker (at
start-up, for the providers it cannot offer) and the API (refusing a create)."""

from __future__ import annotations

HOW_TO_CONFIGURE = {
    "elevenlabs": "set ELEVENLABS_API_KEY (or SPEAKING_ELEVENLABS_API_KEY) for the workers",
    "gcp": (
        "set GOOGLE_APPLICATION_CREDENTIALS (or SPEAKING_GCP_CREDENTIALS_FILE) to a "
        "service-account file for the workers"
    ),
    "aws": (
        "give the workers AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a "
        "profile or an instance role; or SPEAKING_AWS_ACCESS_KEY_ID/_SECRET_ACCESS_KEY)"
    ),
    "offline": "it is built in: every worker offers it",
}


def not_configured(provider: str, configured: list[str]) -> str:
    """The refusal of a create for a provider no live worker offers."""
    how = HOW_TO_CONFIGURE.get(provider, "")
    return (
        f"provider {provider} is not configured on this deployment (no credentials): {how}; "
        f"configured providers: {', '.join(configured) or 'none'}"
    )
