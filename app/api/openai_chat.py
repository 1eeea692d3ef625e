"""OpenAI's chat completions API over tunery's causal language models, for OpenAI's client
libraries: `OpenAI(base_url="<tunery>/v1", api_key="<tunery API key>")`, a model's id as the
model. Errors come in OpenAI's shape (`app.problems.OPENAI_PATHS`)."""

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from app.deps import CallerDep
from app.schemas import ChatCompletion, ChatCompletionRequest, OpenAIError
from app.services import generation

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        200: {"content": {"text/event-stream": {}}},
        **{status: {"model": OpenAIError} for status in (400, 401, 404, 409)},
    },
)
async def create_chat_completion(
    body: ChatCompletionRequest, caller: CallerDep
) -> ChatCompletion | EventSourceResponse:
    """The answer to `messages` by the `causal_lm` model `model`. With `stream`, Server-Sent
    Events of `chat.completion.chunk`s (the role, the text piece by piece, the finish reason,
    with `stream_options.include_usage` the token counts), then `data: [DONE]`. A client that
    disconnects stops the generation. Errors: `{"error": {message, type, param, code}}`, `400`
    for a bad parameter, `401` for a missing or bad key, `404` for an unknown model, `409` for
    a model that does not generate text."""
    started = await generation.start(caller.tenant_id, body.model, body, messages=body.messages)
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return EventSourceResponse(generation.chat_chunks(started, include_usage), ping=15)
    return await generation.chat_completion(started)
