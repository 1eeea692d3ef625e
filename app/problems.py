"""RFC 9457 problem details for every error the API returns, but on OpenAI's routes: there, the
error shape of OpenAI's API, which its client libraries read."""

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException

from trainer.spec import JOB_KINDS, SpecIssue

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status, self.detail, self.errors = status, detail, errors
        self.headers = headers or {}


class NotFound(Problem):
    def __init__(self, what: str, id_: str, by: str = "id") -> None:
        super().__init__(404, f"no {what} with {by} {id_!r}")


class Conflict(Problem):
    def __init__(self, detail: str) -> None:
        super().__init__(409, detail)


class Unauthorized(Problem):
    def __init__(self, detail: str) -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(Problem):
    def __init__(self, detail: str, field: str | None = None) -> None:
        errors = [{"field": field, "message": detail}] if field else None
        super().__init__(403, detail, errors)


class TooManyRequests(Problem):
    """A 429 saying when to come back: `Retry-After` in seconds."""

    def __init__(self, detail: str, retry_after_seconds: int) -> None:
        super().__init__(429, detail, headers={"Retry-After": str(retry_after_seconds)})


class DatabaseUnavailable(Problem):
    """A 503 while the database cannot be reached (a restart, a failover): try again shortly."""

    def __init__(self) -> None:
        detail = "the database cannot be reached just now; try again in a moment"
        super().__init__(503, detail, headers={"Retry-After": "1"})


def is_unreachable(error: DBAPIError) -> bool:
    """The database could not be reached or dropped the connection, rather than refusing the
    statement: an outage to ride out, not a fault of the request or of the server's code."""
    return isinstance(error, OperationalError) or error.connection_invalidated


class InvalidInput(Problem):
    """A 422 naming each field at fault, as `errors: [{field, message}]`."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        errors = [{"field": i.field, "message": i.message} for i in issues]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(422, detail, errors)


# The routes that answer as OpenAI's API does, errors included, and every path under them:
# chat completions, files and fine-tuning jobs (app/api/openai_*.py).
OPENAI_PATHS = ("/v1/chat/completions", "/v1/files", "/v1/fine_tuning")
OPENAI_ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
CHAT_COMPLETIONS = "/v1/chat/completions"


def is_openai_path(path: str) -> bool:
    return any(path == route or path.startswith(route + "/") for route in OPENAI_PATHS)


def problem_response(
    status: int, detail: str, instance: str, errors: list[dict[str, str]] | None = None
) -> JSONResponse:
    if is_openai_path(instance):
        return openai_error_response(status, detail, instance, errors)
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def openai_error_response(
    status: int, detail: str, instance: str, errors: list[dict[str, str]] | None
) -> JSONResponse:
    """`{"error": {message, type, param, code}}`: `param` the first field at fault. A request
    that OpenAI would call invalid is a 400 there, where tunery says 422. Chat completions look
    up nothing but the model: their 404 is OpenAI's `model_not_found`."""
    status = 400 if status == 422 else status
    code = OPENAI_ERROR_CODES.get(status)
    if status == 404 and instance == CHAT_COMPLETIONS:
        code = "model_not_found"
    error = {
        "message": detail,
        "type": "server_error" if status >= 500 else "invalid_request_error",
        "param": errors[0]["field"] if errors else None,
        "code": code,
    }
    return JSONResponse({"error": error}, status_code=status)


def response_of(problem: Problem, instance: str) -> JSONResponse:
    response = problem_response(problem.status, problem.detail, instance, problem.errors)
    response.headers.update(problem.headers)
    return response


def _field(error: dict[str, Any]) -> str:
    """`("body", "finetune", "hyperparameters", "epochs")` -> `hyperparameters.epochs`, and a
    sweep's `("body", "job", "finetune", "data")` -> `job.data`: a job spec's kind is the tag of
    its union, not a field of the spec."""
    parts = [str(p) for p in error["loc"]]
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        parts.append(error["ctx"]["discriminator"].strip("'"))
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:] if parts[0] == "body" or len(parts) > 1 else parts
    if parts and parts[0] in JOB_KINDS:
        parts = parts[1:]
    elif parts[:1] == ["job"] and len(parts) > 1 and parts[1] in JOB_KINDS:
        del parts[1]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return response_of(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        issues = [SpecIssue(_field(e), e["msg"]) for e in exc.errors()]
        error = InvalidInput(issues)
        return problem_response(422, error.detail, request.url.path, error.errors)

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> JSONResponse:
        """The last guard of a text the validation let through: PostgreSQL stores no NUL
        character (psycopg refuses it before sending; a JSON escape of it is SQLSTATE 22P05).
        Any other data error is the server's fault."""
        if "NUL" not in str(exc.orig) and getattr(exc.orig, "sqlstate", None) != "22P05":
            raise exc
        detail = "a text in the request contains the NUL character (U+0000), which is not stored"
        return problem_response(
            422, detail, request.url.path, [{"field": "body", "message": detail}]
        )

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if not is_unreachable(exc):
            raise exc
        return response_of(DatabaseUnavailable(), request.url.path)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        response = problem_response(exc.status_code, detail, request.url.path)
        response.headers.update(exc.headers or {})
        return response
