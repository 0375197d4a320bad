"""Pure core: text splitting and command validation (no network)."""

from __future__ import annotations

import pytest

from worker.commands import Create, Say, parse_command
from worker.direction import Direction
from worker.errors import CommandError, ErrorCode
from worker.model import Provider
from worker.segmentation import split_sentences

BASE = {"command_id": "c1", "speaking_id": "s1"}
CREATE = {
    **BASE,
    "type": "create",
    "reference_type": "call",
    "reference_id": "1732960000.12",
    "language": "en-US",
}


def test_sentences_keep_punctuation_and_quotes() -> None:
    text = 'Hello there. How are you? I am fine!\nSecond line "quoted." End'
    assert split_sentences(text) == [
        "Hello there.",
        "How are you?",
        "I am fine!",
        'Second line "quoted."',
        "End",
    ]


def test_abbreviations_and_numbers_do_not_split() -> None:
    assert split_sentences("Dr. Smith paid 3.14 dollars. J. Doe left.") == [
        "Dr. Smith paid 3.14 dollars.",
        "J. Doe left.",
    ]


def test_cjk_and_korean_sentences() -> None:
    assert split_sentences("你好。我很好！谢谢") == ["你好。", "我很好！", "谢谢"]  # noqa: RUF001
    assert split_sentences("안녕하세요. 반갑습니다! 좋아요") == [
        "안녕하세요.",
        "반갑습니다!",
        "좋아요",
    ]


def test_run_on_text_is_capped_without_losing_words() -> None:
    text = "word " * 500
    pieces = split_sentences(text, max_chars=120)
    assert all(0 < len(p) <= 120 for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_create_defaults() -> None:
    command = parse_command(CREATE)
    assert isinstance(command, Create)
    assert command.provider is Provider.ELEVENLABS
    assert command.direction is Direction.BOTH
    assert command.voice_id == ""


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"type": "dance"}, "type 'dance' is not one of create, say, flush, stop, delete, locate"),
        ({"type": ""}, "type '' is not one of"),
        ({"command_id": ""}, "command_id is missing"),
        ({"speaking_id": "a/b"}, "speaking_id 'a/b' is malformed"),
        ({"reference_type": ""}, "reference_type is missing"),
        ({"reference_type": "queue"}, "reference_type 'queue' is not one of call, confbridge"),
        ({"reference_id": ""}, "reference_id is missing"),
        ({"reference_id": "x/../y"}, "reference_id is malformed"),
        ({"language": "english"}, "not a valid BCP 47 tag"),
        ({"language": "en_US"}, "not a valid BCP 47 tag"),
        ({"language": ""}, "not a valid BCP 47 tag"),
        ({"provider": "azure"}, "provider 'azure' is not one of elevenlabs, gcp, aws, offline"),
        ({"direction": "up"}, "direction 'up' is not one of in, out, both"),
        ({"voice_id": "v" * 129}, "voice_id is longer than 128"),
    ],
)
def test_bad_create_says_what_is_wrong(change: dict[str, str], fragment: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command({**CREATE, **change})
    assert info.value.code is ErrorCode.INVALID
    assert fragment in info.value.message


@pytest.mark.parametrize(
    "tag", ["en", "en-US", "ko-KR", "zh-Hant-TW", "sr-Latn-RS", "es-419", "de-CH-1996"]
)
def test_valid_bcp47(tag: str) -> None:
    assert isinstance(parse_command({**CREATE, "language": tag}), Create)


def test_text_limit_counts_characters_not_bytes() -> None:
    korean = "가" * 5000  # 15,000 bytes in UTF-8
    command = parse_command({**BASE, "type": "say", "text": korean})
    assert isinstance(command, Say) and len(command.text) == 5000
    with pytest.raises(CommandError, match="5001 characters; at most 5000"):
        parse_command({**BASE, "type": "say", "text": korean + "가"})


@pytest.mark.parametrize("text", [None, "", "   \n "])
def test_empty_text_is_refused(text: str | None) -> None:
    fields = {**BASE, "type": "say"} | ({} if text is None else {"text": text})
    with pytest.raises(CommandError) as info:
        parse_command(fields)
    assert "1 to 5000 characters" in info.value.message


def test_error_serialises_allowed_values() -> None:
    with pytest.raises(CommandError) as info:
        parse_command({**CREATE, "direction": "sideways"})
    assert info.value.to_dict() == {
        "code": "invalid_argument",
        "message": "direction 'sideways' is not one of in, out, both",
        "allowed": ["in", "out", "both"],
    }
