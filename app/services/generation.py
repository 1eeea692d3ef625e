"""Text generation by stored causal language models, as the API serves it: tunery's own answer
and events (`POST /v1/models/{id}/generate`), and OpenAI's chat completion and chunks
(`POST /v1/chat/completions`).

Language models load into the cache that predictors use (`models.loaded`), in one byte budget.
The prompt is tokenized and each piece of text sampled in a worker thread, so the event loop
never waits on a forward pass; a piece a thread hop, so that a reader that stops (a streaming
client gone, its response cancelled) leaves the rest unsampled.
"""

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from anyio import to_thread
from sse_starlette import ServerSentEvent

from app.problems import Conflict, InvalidInput
from app.schemas import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionDelta,
    ChatCompletionMessage,
    ChatMessage,
    GeneratedText,
    GenerateResponse,
    SamplingSettings,
    Usage,
)
from app.services import models
from trainer.chat_format import ChatTemplateError
from trainer.generation import Generation, LanguageModel, Sampling
from trainer.readers.chat import Message
from trainer.spec import SpecIssue


@dataclass(frozen=True)
class Started:
    """A generation ready to sample: nothing is computed until its pieces are read."""

    model_id: str
    generation: Generation


async def start(
    tenant_id: str,
    model_id: str,
    settings: SamplingSettings,
    prompt: str | None = None,
    messages: Sequence[ChatMessage] | None = None,
) -> Started:
    """A generation from `prompt` (text to continue) or `messages` (a conversation to answer):
    404 for an unknown model, 409 for one that does not generate text, 422 naming `prompt` or
    `messages` for a prompt the model cannot answer."""
    model = await models.served_row(tenant_id, model_id)
    if model.task != "causal_lm":
        raise Conflict(f"model {model.id} is a {model.task} model; causal_lm models generate text")
    language_model = await models.loaded(model, LanguageModel)
    sampling = Sampling(
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        stop=settings.stop,
        seed=settings.seed,
    )
    generation = await to_thread.run_sync(_begin, language_model, sampling, prompt, messages)
    return Started(model.id, generation)


def _begin(
    language_model: LanguageModel,
    sampling: Sampling,
    prompt: str | None,
    messages: Sequence[ChatMessage] | None,
) -> Generation:
    field = "prompt" if messages is None else "messages"
    # Checked as the request's messages were read; a training example's rules (no empty
    # assistant turn) are not a prompt's.
    conversation = (
        None
        if messages is None
        else [Message.model_construct(role=m.role, content=m.content) for m in messages]
    )
    try:
        ids = language_model.prompt_ids(prompt=prompt, messages=conversation)
    except ChatTemplateError as error:  # a template may refuse a conversation
        raise InvalidInput([SpecIssue(field, f"the model's chat template: {error}")]) from None
    if not ids:
        raise InvalidInput([SpecIssue(field, "has no tokens: give text to continue")])
    if len(ids) >= language_model.max_length:
        message = (
            f"is {len(ids)} tokens, which leaves no room for an answer: the model reads "
            f"{language_model.max_length} tokens at most"
        )
        raise InvalidInput([SpecIssue(field, message)])
    return language_model.generate(ids, sampling)


async def pieces(generation: Generation) -> AsyncIterator[str]:
    """The text as it is sampled, each piece in a worker thread; sampling ends where reading
    does."""
    sampled = generation.pieces()
    try:
        while (piece := await to_thread.run_sync(next, sampled, None)) is not None:
            yield piece
    finally:
        sampled.close()


def _usage(generation: Generation) -> Usage:
    return Usage(
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
        total_tokens=generation.prompt_tokens + generation.completion_tokens,
    )


def _answer(started: Started, text: str) -> GenerateResponse:
    generation = started.generation
    return GenerateResponse(
        text=text,
        finish_reason=generation.finish_reason,
        usage=_usage(generation),
        model=started.model_id,
    )


async def answer(started: Started) -> GenerateResponse:
    return _answer(started, "".join([piece async for piece in pieces(started.generation)]))


async def events(started: Started) -> AsyncIterator[ServerSentEvent]:
    """`text` for each piece of the answer as it is sampled, then `end`: the whole answer, as
    the JSON response has it."""
    text = []
    async for piece in pieces(started.generation):
        text.append(piece)
        yield ServerSentEvent(GeneratedText(text=piece).model_dump_json(), event="text")
    yield ServerSentEvent(_answer(started, "".join(text)).model_dump_json(), event="end")


async def chat_completion(started: Started) -> ChatCompletion:
    text = "".join([piece async for piece in pieces(started.generation)])
    choice = ChatCompletionChoice(
        message=ChatCompletionMessage(content=text),
        finish_reason=started.generation.finish_reason,
    )
    return ChatCompletion(
        id=_completion_id(),
        created=int(time.time()),
        model=started.model_id,
        choices=[choice],
        usage=_usage(started.generation),
    )


async def chat_chunks(started: Started, include_usage: bool) -> AsyncIterator[ServerSentEvent]:
    """OpenAI's stream of `chat.completion.chunk`s: the assistant's role, a chunk for each
    piece of text, the finish reason, the token counts if asked for, then `[DONE]`."""
    completion_id, created = _completion_id(), int(time.time())

    def chunk(
        choices: list[ChatCompletionChunkChoice], usage: Usage | None = None
    ) -> ServerSentEvent:
        return ServerSentEvent(
            ChatCompletionChunk(
                id=completion_id,
                created=created,
                model=started.model_id,
                choices=choices,
                usage=usage,
            ).model_dump_json()
        )

    def delta(**fields: str) -> ServerSentEvent:
        return chunk([ChatCompletionChunkChoice(delta=ChatCompletionDelta(**fields))])

    yield delta(role="assistant", content="")
    async for piece in pieces(started.generation):
        yield delta(content=piece)
    generation = started.generation
    finish = ChatCompletionChunkChoice(
        delta=ChatCompletionDelta(), finish_reason=generation.finish_reason
    )
    yield chunk([finish])
    if include_usage:
        yield chunk([], _usage(generation))
    yield ServerSentEvent("[DONE]")


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
