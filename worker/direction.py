"""Who hears the speech, and which snoop ``whisper`` value achieves it.

The public API defines direction by who hears (see the seed document):

* ``in``   -- the remote party of the referenced call hears, the local side does not;
* ``out``  -- the local side (the parties bridged with that call) hears, the remote does not;
* ``both`` -- everyone on the call hears.

A snoop channel on the referenced channel whispers *towards* that channel's own
party with ``whisper=out`` and towards the parties bridged with it with
``whisper=in`` (measured on Asterisk 22.10, see docs/direction.md). The two
vocabularies are therefore inverted for ``in`` and ``out``.
"""

from __future__ import annotations

import enum


class Direction(enum.StrEnum):
    IN = "in"
    OUT = "out"
    BOTH = "both"


class Whisper(enum.StrEnum):
    """Asterisk's snoop ``whisper`` parameter values."""

    IN = "in"
    OUT = "out"
    BOTH = "both"


DEFAULT_DIRECTION = Direction.BOTH

_WHISPER = {
    Direction.IN: Whisper.OUT,
    Direction.OUT: Whisper.IN,
    Direction.BOTH: Whisper.BOTH,
}


def whisper_for(direction: Direction) -> Whisper:
    """The snoop whisper value that makes exactly the parties of ``direction`` hear."""
    return _WHISPER[direction]
