"""`POST /v1/chat/completions` with OpenAI's own Python client against a real API server: a
tiny random-weight Llama (saved at test time, configured in the server's environment) imported
as a model, asked plainly and streamed, and the errors the client raises by OpenAI's statuses
and shape."""

import httpx
import openai
import pytest
from openai import OpenAI

from tests.tiny_lm import tiny_llama_stack

pytestmark = pytest.mark.e2e

QUESTION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what is the answer?"},
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with tiny_llama_stack(tmp_path_factory.mktemp("openai-stack")) as stack:
        yield stack


@pytest.fixture(scope="module")
def llama(stack) -> str:
    with stack.client() as client:
        imported = client.post("/v1/models/import", data={"hf_model": "tiny-llama"})
    assert imported.status_code == 201, imported.text
    return imported.json()["id"]


def openai_client(stack, key: str) -> OpenAI:
    return OpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def client(stack) -> OpenAI:
    return openai_client(stack, stack.key)


def test_a_completion_and_its_stream_give_the_same_answer(client, llama):
    asked = {"model": llama, "messages": QUESTION, "temperature": 0, "max_tokens": 12}
    completion = client.chat.completions.create(**asked)
    assert (completion.object, completion.model) == ("chat.completion", llama)
    (choice,) = completion.choices
    assert choice.message.role == "assistant" and choice.message.content
    usage = completion.usage
    assert usage.prompt_tokens > 0 and 1 <= usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert choice.finish_reason == ("length" if usage.completion_tokens == 12 else "stop")

    chunks = list(
        client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True})
    )
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk.id for chunk in chunks}) == 1
    *answer, finish, counts = chunks
    assert answer[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in answer)
    assert text == choice.message.content
    assert finish.choices[0].finish_reason == choice.finish_reason
    assert counts.choices == [] and counts.usage == usage

    unasked = list(client.chat.completions.create(**asked, stream=True))
    assert all(chunk.usage is None for chunk in unasked)
    assert "".join(c.choices[0].delta.content or "" for c in unasked) == text


def test_max_completion_tokens_seed_and_stop(client, llama):
    asked = {"model": llama, "messages": QUESTION}
    short = client.chat.completions.create(**asked, temperature=0, max_completion_tokens=2)
    assert short.usage.completion_tokens <= 2
    sampled = asked | {"temperature": 1.0, "top_p": 0.95, "seed": 3, "max_tokens": 16}
    first, again = (client.chat.completions.create(**sampled) for _ in range(2))
    text = first.choices[0].message.content
    assert again.choices[0].message.content == text and len(text) > 6, text
    # The same draws, cut where a text from the middle of that answer first appears.
    stop = text[4:6]
    stopped = client.chat.completions.create(**sampled, stop=[stop])
    assert stopped.choices[0].message.content == text[: text.find(stop)]
    assert stopped.choices[0].finish_reason == "stop"


def test_errors_are_openais_with_their_status_and_param(stack, client, llama):
    unknown = "model_" + "0" * 32
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model=unknown, messages=QUESTION)
    assert missing.value.code == "model_not_found" and unknown in missing.value.message
    # Another tenant's model is as unknown as one that does not exist.
    stranger = openai_client(stack, stack.new_key())
    with pytest.raises(openai.NotFoundError) as theirs:
        stranger.chat.completions.create(model=llama, messages=QUESTION)
    assert theirs.value.message == missing.value.message.replace(unknown, llama)

    with pytest.raises(openai.AuthenticationError) as refused:
        openai_client(stack, "tunery_not-a-key").chat.completions.create(
            model=llama, messages=QUESTION
        )
    assert refused.value.code == "invalid_api_key"

    for bad, param in [
        ({"n": 2}, "n"),
        ({"temperature": 3}, "temperature"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "the quick brown fox " * 200}]}, "messages"),
    ]:
        with pytest.raises(openai.BadRequestError) as invalid:
            client.chat.completions.create(**({"model": llama, "messages": QUESTION} | bad))
        assert (invalid.value.param, invalid.value.type) == (param, "invalid_request_error")

    with httpx.Client(base_url=stack.base_url) as plain:
        without_key = plain.post("/v1/chat/completions", json={"model": llama, "messages": []})
    assert without_key.status_code == 401
    assert without_key.json()["error"]["code"] == "invalid_api_key"
