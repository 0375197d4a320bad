"""Logs cannot be forged: whatever a request carries, each record stays one line of
printable ASCII, and reading it back gives the original text (worker/logs.py)."""

from __future__ import annotations

import json
import logging

import pytest

from worker.logs import JsonFormatter

NASTY = {
    "newline": "a\nb",
    "carriage return": "a\rb",
    "NUL": "a\x00b",
    "CSI escape sequence": "a\x1b[2J\x1b[31mred",
    "DEL": "a\x7fb",
    "NEL (C1)": "a\x85b",
    "C1 CSI": "a\x9b2Jb",
    "line separator U+2028": "a\u2028b",
    "paragraph separator U+2029": "a\u2029b",
    "bidi override U+202E": "a\u202eb",
    "a forged record": 'x"}\n{"level": "error", "msg": "forged',
}


@pytest.mark.parametrize("text", NASTY.values(), ids=NASTY.keys())
def test_a_value_from_outside_is_escaped_and_reads_back(text: str) -> None:
    record = logging.makeLogRecord(
        {"msg": "request %s", "args": (text,), "levelno": logging.INFO, "levelname": "INFO"}
    )
    record.path = text
    line = JsonFormatter().format(record)
    assert "\n" not in line and "\r" not in line
    assert all(" " <= c <= "~" for c in line), line  # printable ASCII only
    back = json.loads(line)
    assert back["path"] == text and back["msg"] == f"request {text}"
