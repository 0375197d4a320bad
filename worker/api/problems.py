"""Error responses: one JSON shape for every refusal, saying what was wrong and what
is allowed. Worker error codes map to HTTP statuses here and only here."""

from __future__ import annotations

from aiohttp import web

from worker.errors import CommandError, ErrorCode

STATUS = {
    ErrorCode.INVALID: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.LIMIT: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


def problem(
    status: int,
    code: str,
    message: str,
    allowed: list[str] | None = None,
    details: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, object] = {"code": code, "message": message}
    if allowed:
        error["allowed"] = allowed
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status)


def from_command_error(error: CommandError) -> web.Response:
    return problem(
        STATUS[error.code], error.code.value, error.message, error.allowed, error.details
    )


def from_reply_error(error: dict[str, object]) -> web.Response:
    """A worker's refusal (the ``error`` object of its reply) as an HTTP response."""
    code = ErrorCode(str(error.get("code", ErrorCode.UNAVAILABLE.value)))
    allowed = error.get("allowed")
    details = error.get("details")
    return problem(
        STATUS[code],
        code.value,
        str(error.get("message", "")),
        [str(a) for a in allowed] if isinstance(allowed, list) else None,
        {str(k): str(v) for k, v in details.items()} if isinstance(details, dict) else None,
    )


def not_found(speaking_id: str) -> web.Response:
    return problem(404, ErrorCode.NOT_FOUND.value, f"speaking {speaking_id} not found")
