"""`POST /v1/models/{id}/generate` in-process: tiny random-weight causal LMs imported through
the API (a Llama with a chat template of its own, a GPT-2 without), answers in JSON and as
Server-Sent Events, how they end, their token counts, the mistakes a request can make, and a
streaming client that goes away."""

import json

import anyio
import pytest
from fastapi.testclient import TestClient

from app.config import get_settings
from app.services import models
from app.services.inference import ModelCache, Predictor
from tests.conftest import new_tenant
from tests.test_api import assert_problem
from tests.test_registry import import_model, network, weights
from tests.tiny_lm import save_tiny_causal_lm
from trainer.generation import LanguageModel
from tunery._sse import SSEDecoder

UNKNOWN = "model_" + "0" * 32
QUESTION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what is the answer?"},
]


@pytest.fixture(scope="module")
def client(api_key, tmp_path_factory):
    """The in-process API with the tiny models configured for the whole module: a stored model
    rebuilds from its card, but its parameters name a configured base."""
    root = tmp_path_factory.mktemp("hf")
    dirs = {family: str(save_tiny_causal_lm(root / family, family)) for family in ("llama", "gpt2")}
    from app.main import app

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNERY_HF_MODEL_DIRS", json.dumps(dirs))
        with TestClient(app, headers=api_key.headers) as test_client:
            yield test_client


@pytest.fixture(scope="module")
def lms(client) -> dict[str, str]:
    """The ids of the imported tiny models, by family."""
    imported = {}
    for family in ("llama", "gpt2"):
        response = client.post("/v1/models/import", data={"hf_model": family})
        assert response.status_code == 201, response.text
        assert response.json()["task"] == "causal_lm"
        imported[family] = response.json()["id"]
    return imported


def generate(client, model_id: str, **body):
    return client.post(f"/v1/models/{model_id}/generate", json=body)


def answer(client, model_id: str, **body) -> dict:
    response = generate(client, model_id, **body)
    assert response.status_code == 200, response.text
    return response.json()


def streamed(client, model_id: str, **body) -> tuple[list[str], dict]:
    """The `text` events' pieces and the `end` event's answer."""
    response = generate(client, model_id, stream=True, **body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = SSEDecoder().feed(response.content)
    assert [e.event for e in events] == ["text"] * (len(events) - 1) + ["end"]
    return [json.loads(e.data)["text"] for e in events[:-1]], json.loads(events[-1].data)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize(
    "asked", [{"prompt": "the quick brown"}, {"messages": QUESTION}], ids=["prompt", "messages"]
)
def test_the_stream_joins_to_the_json_answer_of_the_same_seed(client, lms, family, asked):
    settings = asked | {"max_tokens": 12, "temperature": 1.0, "top_p": 0.9, "seed": 7}
    whole = answer(client, lms[family], **settings)
    pieces, end = streamed(client, lms[family], **settings)
    assert pieces and "".join(pieces) == whole["text"]
    assert end == whole
    usage = whole["usage"]
    assert usage["prompt_tokens"] > 0 and 1 <= usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert whole["model"] == lms[family]
    assert whole["finish_reason"] == ("length" if usage["completion_tokens"] == 12 else "stop")


def test_a_conversation_is_asked_in_the_models_chat_template(client, lms):
    """The Llama's template puts a role tag before each turn, so the same words make a longer
    prompt as a conversation than as plain text; GPT-2's default template names the roles."""
    words = [message["content"] for message in QUESTION]
    for family in ("llama", "gpt2"):
        plain = answer(client, lms[family], prompt="".join(words), max_tokens=1)
        asked = answer(client, lms[family], messages=QUESTION, max_tokens=1)
        assert asked["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"], family


def test_max_tokens_and_stop_end_the_answer(client, lms):
    greedy = {"prompt": "the quick brown", "temperature": 0}
    long = answer(client, lms["llama"], **greedy, max_tokens=24)
    assert long["usage"]["completion_tokens"] > 4 and len(long["text"]) > 4, long
    cut = answer(client, lms["llama"], **greedy, max_tokens=4)
    assert cut["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 4
    assert long["text"].startswith(cut["text"])
    # A stop text from the middle of the greedy answer: the answer ends before it.
    stop = long["text"][3:5]
    text = long["text"][: long["text"].find(stop)]
    for stops in (stop, [stop, "never in it"]):
        stopped = answer(client, lms["llama"], **greedy, max_tokens=24, stop=stops)
        assert (stopped["text"], stopped["finish_reason"]) == (text, "stop")
        pieces, end = streamed(client, lms["llama"], **greedy, max_tokens=24, stop=stops)
        assert "".join(pieces) == text and end == stopped


def test_a_model_of_another_task_is_a_conflict(client, lms):
    classifier = import_model(client, weights(network())).json()["id"]
    problem = assert_problem(generate(client, classifier, prompt="the"), 409)
    assert "classification" in problem["detail"] and "causal_lm" in problem["detail"]


def test_an_unknown_or_another_tenants_model_is_not_found(client, lms):
    unknown = assert_problem(generate(client, UNKNOWN, prompt="the"), 404)
    stranger = new_tenant()
    theirs = client.post(
        f"/v1/models/{lms['llama']}/generate", json={"prompt": "the"}, headers=stranger.headers
    )
    assert assert_problem(theirs, 404)["detail"] == unknown["detail"].replace(UNKNOWN, lms["llama"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": "the", "messages": QUESTION}, "prompt"),
        ({"prompt": "the quick brown fox " * 200}, "prompt"),
        ({"messages": [{"role": "user", "content": "the quick brown fox " * 200}]}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"prompt": "the", "temperature": 2.5}, "temperature"),
        ({"prompt": "the", "top_p": 0}, "top_p"),
        ({"prompt": "the", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "the", "seed": -1}, "seed"),
        ({"prompt": "the", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"prompt": "the", "stop": ""}, "stop"),
        ({"prompt": "the", "logprobs": True}, "logprobs"),
    ],
)
def test_mistakes_are_422_naming_the_field(client, lms, body, field):
    problem = assert_problem(generate(client, lms["llama"], **body), 422)
    assert problem["errors"][0]["field"].startswith(field), problem


def test_a_too_long_prompt_says_how_long_it_is_and_what_the_model_reads(client, lms):
    problem = assert_problem(
        generate(client, lms["gpt2"], prompt="the quick brown fox " * 200), 422
    )
    assert "leaves no room for an answer" in problem["detail"] and "512" in problem["detail"]


def test_a_streaming_client_that_disconnects_stops_the_generation(client, lms, api_key):
    """Sent straight to the ASGI app, which the test client would not disconnect from: the
    client goes away after the first piece of an answer 400 tokens long, and the model is run
    no more."""
    from app.main import app

    body = json.dumps(
        {"prompt": "the quick", "max_tokens": 400, "seed": 0, "stream": True}
    ).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/v1/models/{lms['llama']}/generate",
        "raw_path": f"/v1/models/{lms['llama']}/generate".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", api_key.headers["Authorization"].encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[bytes] = []
    steps = []  # one per forward pass of the model

    async def disconnect_after_the_first_piece() -> int:
        row = await models.served_row(api_key.tenant_id, lms["llama"])
        hf_model = (await models.loaded(row, LanguageModel)).network.backbone.lm
        hook = hf_model.register_forward_hook(lambda *_: steps.append(1))
        first_piece, asked = anyio.Event(), False

        async def receive() -> dict:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": body, "more_body": False}
            await first_piece.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body":
                sent.append(message.get("body", b""))
                if b"event: text" in sent[-1]:
                    first_piece.set()

        try:
            with anyio.fail_after(60):
                await app(scope, receive, send)
            run_then = len(steps)
            await anyio.sleep(0.5)  # a generation going on would run the model meanwhile
            return run_then
        finally:
            hook.remove()

    run_then = anyio.run(disconnect_after_the_first_piece)
    assert b"event: text" in b"".join(sent) and b"event: end" not in b"".join(sent)
    assert 1 <= len(steps) == run_then < 50, len(steps)


def test_language_models_and_predictors_share_one_cache_and_its_budget(client, lms):
    classifier = import_model(client, weights(network())).json()["id"]
    stored = get_settings().artifact_dir / "models"
    cache = ModelCache(max_bytes=1)  # room for one model at a time, whatever its kind
    gpt2 = lms["gpt2"]
    language_model = cache.get(gpt2, stored / gpt2 / "model.safetensors", LanguageModel)
    assert cache.peek(gpt2) is language_model
    predictor = cache.get(classifier, stored / classifier / "model.safetensors", Predictor)
    assert cache.peek(gpt2) is None and cache.peek(classifier) is predictor
    assert cache.size_bytes == predictor.size_bytes
