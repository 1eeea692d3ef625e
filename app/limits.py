"""Limits on what a request may carry, checked before any route sees it: bodies are counted as
they stream in and refused with 413 past a limit, so no request is ever held whole in memory
(uploads spool to disk as they arrive); a path or query with the NUL character is a 422."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.problems import InvalidInput, problem_response, response_of
from trainer.spec import NUL_REFUSED, SpecIssue


class BodySizeLimit:
    """Pure ASGI middleware: uploads (`POST /v1/datasets`, `POST /v1/files`) get
    `upload_bytes`, every other request `request_bytes`. A declared Content-Length over the
    limit is refused before the body is read; a body that streams past it is cut off there."""

    def __init__(self, app: ASGIApp, upload_bytes: int, request_bytes: int) -> None:
        self.app, self.upload_bytes, self.request_bytes = app, upload_bytes, request_bytes

    def _limit(self, scope: Scope) -> int:
        uploads = ("/v1/datasets", "/v1/files")
        upload = scope["method"] == "POST" and scope["path"].rstrip("/") in uploads
        return self.upload_bytes if upload else self.request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, send, limit)
            return
        received, refused = 0, False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await self._refuse(scope, send, limit)
                    return {"type": "http.disconnect"}  # the app stops reading here
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # once refused, the 413 is the only response
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, limit: int) -> None:
        detail = f"the request body is larger than the limit of {limit} bytes"
        await problem_response(413, detail, scope["path"])(scope, _no_body, send)


class NulFreeUrl:
    """Pure ASGI middleware: a NUL character (U+0000, `%00`) in the path or the query string is
    a 422 naming which. Every id and cursor there is looked up in the database, and PostgreSQL
    refuses NUL in text: the lookup would fail as a 500 instead of a 404."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = "path" if "\x00" in scope["path"] else None
            if b"%00" in scope["query_string"]:
                where = "query"
            if where is not None:
                refused = InvalidInput([SpecIssue(where, NUL_REFUSED)])
                await response_of(refused, scope["path"])(scope, _no_body, send)
                return
        await self.app(scope, receive, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
