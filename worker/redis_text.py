"""What Redis replies carry, as text: clients may be made with or without
``decode_responses``, so a value is ``bytes`` or ``str`` depending on the caller's pool."""

from __future__ import annotations


def as_text(value: bytes | str) -> str:
    """``value`` as ``str`` (UTF-8 decoded when it is bytes)."""
    return value.decode() if isinstance(value, bytes) else value
