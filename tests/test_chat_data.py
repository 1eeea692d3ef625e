"""Chat, prompt/completion and preference datasets in OpenAI's fine-tuning format: each bad line
is refused naming its line and field, good files read into examples and splits, and an upload
is described with its messages per role."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.test_api import assert_problem
from tests.test_readers import refused, write_jsonl
from trainer.data import UNLABELLED, read_file_dataset
from trainer.readers import DatasetError, UnlabelledFormat, preview, read_dataset
from trainer.readers.chat import (
    ChatExample,
    CompletionExample,
    Message,
    PreferenceExample,
    role_counts,
)

CHAT = {
    "messages": [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Lyon", "weight": 0},
        {"role": "user", "content": "Try again."},
        {"role": "assistant", "content": "Paris", "weight": 1},
    ]
}
COMPLETION = {"prompt": "2 + 2 =", "completion": " 4"}
PREFERENCE = {
    "input": {"messages": [{"role": "user", "content": "Say hello."}]},
    "preferred_output": [{"role": "assistant", "content": "Hello!"}],
    "non_preferred_output": [{"role": "assistant", "content": "No."}],
}
USER = {"role": "user", "content": "hi"}
ANSWER = {"role": "assistant", "content": "hello"}


def chat_with(*messages: dict) -> dict:
    return {"messages": list(messages)}


@pytest.mark.parametrize(
    ("first", "line", "where", "phrase"),
    [
        (CHAT, chat_with({"content": "hi"}, ANSWER), "messages[0].role", "missing"),
        (CHAT, chat_with({"role": "tool", "content": "x"}, ANSWER), "messages[0].role", "'user'"),
        (CHAT, chat_with({"role": "user"}, ANSWER), "messages[0].content", "missing"),
        (
            CHAT,
            chat_with(USER, {"role": "assistant", "content": 3}),
            "messages[1].content",
            "a string",
        ),
        (
            CHAT,
            chat_with(USER, {"role": "assistant", "content": " "}),
            "messages[1].content",
            "empty",
        ),
        (CHAT, chat_with(USER), "messages", "no assistant message"),
        (CHAT, chat_with(), "messages", "no assistant message"),
        (CHAT, {"messages": "hi"}, "messages", "must be a list"),
        (CHAT, chat_with("hi", ANSWER), "messages[0]", "must be an object"),
        (CHAT, chat_with(USER, {**ANSWER, "weight": 2}), "messages[1].weight", "0 (leave"),
        (CHAT, chat_with(USER, {**ANSWER, "weight": True}), "messages[1].weight", "0 (leave"),
        (CHAT, chat_with({**USER, "weight": 1}, ANSWER), "messages[0].weight", "only assistant"),
        (CHAT, chat_with(USER, {**ANSWER, "name": "bot"}), "messages[1].name", "unknown field"),
        (CHAT, {**chat_with(USER, ANSWER), "id": 7}, "id", "unknown field"),
        (CHAT, {**chat_with(USER, ANSWER), "tools": []}, "tools", "tools and function calls"),
        (CHAT, COMPLETION, "prompt", "a prompt/completion example in a file of chat examples"),
        (CHAT, PREFERENCE, "input", "a preference example in a file of chat examples"),
        (COMPLETION, CHAT, "messages", "a chat example in a file of prompt/completion"),
        (COMPLETION, {"prompt": ["a"], "completion": "b"}, "prompt", "must be a string"),
        (COMPLETION, {"prompt": "a", "completion": None}, "completion", "must be a string"),
        (COMPLETION, {"prompt": "a", "completion": ""}, "completion", "must not be empty"),
        (COMPLETION, {"prompt": "a"}, "completion", "missing"),
        (PREFERENCE, {**PREFERENCE, "input": {"messages": []}}, "input.messages", "no messages"),
        (
            PREFERENCE,
            {**PREFERENCE, "input": {**PREFERENCE["input"], "tools": [{"type": "function"}]}},
            "input.tools",
            "tools and function calls are not supported",
        ),
        (
            PREFERENCE,
            {**PREFERENCE, "input": {**PREFERENCE["input"], "parallel_tool_calls": False}},
            "input.parallel_tool_calls",
            "tools and function calls are not supported",
        ),
        (
            PREFERENCE,
            {**PREFERENCE, "preferred_output": [ANSWER, ANSWER]},
            "preferred_output",
            "exactly one assistant message",
        ),
        (
            PREFERENCE,
            {**PREFERENCE, "non_preferred_output": [USER]},
            "non_preferred_output",
            "exactly one assistant message",
        ),
        (
            PREFERENCE,
            {**PREFERENCE, "non_preferred_output": ANSWER},
            "non_preferred_output",
            "list",
        ),
        (
            PREFERENCE,
            {**PREFERENCE, "preferred_output": [{"role": "assistant", "content": ""}]},
            "preferred_output[0].content",
            "empty",
        ),
        (
            PREFERENCE,
            {**PREFERENCE, "preferred_output": [{**ANSWER, "weight": 1}]},
            "preferred_output",
            "no weight",
        ),
        (PREFERENCE, CHAT, "messages", "a chat example in a file of preference examples"),
        (CHAT, {**CHAT, "split": "train"}, "split", "on every line or on none"),
    ],
)
def test_a_bad_line_is_refused_naming_its_line_and_field(tmp_path, first, line, where, phrase):
    path = write_jsonl(tmp_path / "d.jsonl", first, "", line)
    error = refused(path, "jsonl", labelled=False)
    assert error.where == f"line 3, field '{where}'", error
    assert phrase in error.message, error


def test_a_bad_split_is_refused_naming_its_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", {**CHAT, "split": "train"}, {**CHAT, "split": "dev"})
    error = refused(path, "jsonl", labelled=False)
    assert error.where == "line 2, field 'split'" and "'dev' is not one of" in error.message


@pytest.mark.parametrize(("line", "kind"), [(CHAT, "chat"), (PREFERENCE, "preference")])
def test_labels_are_refused_as_the_format_carries_none(tmp_path, line, kind):
    error = refused(write_jsonl(tmp_path / "d.jsonl", line), "jsonl", labelled=True)
    assert isinstance(error, UnlabelledFormat)
    assert error.where == "file" and error.message == f"{kind} examples carry no class labels"


def test_a_chat_file_reads_into_examples_and_splits(tmp_path):
    second = chat_with(USER, ANSWER)
    path = write_jsonl(
        tmp_path / "d.jsonl", {**CHAT, "split": "train"}, "", {**second, "split": "test"}
    )
    data = read_dataset(path, "jsonl", labelled=False)
    assert data.modality == "chat" and len(data) == 2
    assert (data.x, data.texts, data.y, data.labels) == (None, None, None, ())
    assert data.split.tolist() == ["train", "test"]
    assert data.examples[1] == ChatExample(
        messages=(Message(role="user", content="hi"), Message(role="assistant", content="hello"))
    )
    assert [m.weight for m in data.examples[0].messages] == [None, None, 0, None, 1]
    assert role_counts(data.examples) == {"system": 1, "user": 3, "assistant": 3}


def test_a_prompt_completion_file_reads_as_chat(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", COMPLETION, {"prompt": "", "completion": "free"})
    data = read_dataset(path, "jsonl", labelled=False)
    assert data.modality == "chat" and data.split is None
    assert data.examples == (
        CompletionExample(prompt="2 + 2 =", completion=" 4"),
        CompletionExample(prompt="", completion="free"),
    )
    assert role_counts(data.examples) == {"system": 0, "user": 2, "assistant": 2}


def test_a_preference_file_reads_into_pairs(tmp_path):
    conversation = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
        ]
    }
    path = write_jsonl(tmp_path / "d.jsonl", PREFERENCE, {**PREFERENCE, "input": conversation})
    data = read_dataset(path, "jsonl", labelled=False)
    assert data.modality == "preference" and len(data) == 2
    assert data.examples[0] == PreferenceExample(
        input=(Message(role="user", content="Say hello."),), preferred="Hello!", non_preferred="No."
    )
    assert len(data.examples[1].input) == 4
    counts = {"system": 1, "user": 3, "assistant": 1, "pairs": 2}
    assert role_counts(data.examples) == counts


def test_a_chat_file_loads_unlabelled_with_fixed_or_assigned_splits(tmp_path):
    lines = [chat_with(USER, {"role": "assistant", "content": f"answer {i}"}) for i in range(50)]
    data = read_file_dataset("ds_chat", write_jsonl(tmp_path / "d.jsonl", *lines), "jsonl", False)
    assert (data.modality, data.input_shape, data.labels) == ("chat", (), ())
    assert {name: len(split) for name, split in data.splits.items()} == {
        "train": 35,
        "validation": 5,
        "test": 10,
    }
    answers = set()
    for split in data.splits.values():
        assert (split.y == UNLABELLED).all() and split.texts is None and split.x is None
        assert len(split.examples) == len(split)
        answers |= {example.messages[1].content for example in split.examples}
    assert answers == {f"answer {i}" for i in range(50)}
    first = data.splits["train"].take(np.array([1, 0]))
    assert first.examples == data.splits["train"].examples[1::-1]

    assigned = [
        {**line, "split": "validation" if i < 3 else "train"} for i, line in enumerate(lines)
    ]
    data = read_file_dataset(
        "ds_chat2", write_jsonl(tmp_path / "s.jsonl", *assigned), "jsonl", False
    )
    assert len(data.splits["validation"]) == 3
    assert [e.messages[1].content for e in data.splits["validation"].examples] == [
        "answer 0",
        "answer 1",
        "answer 2",
    ]
    assert len(data.splits["test"]) == 10  # the file left test empty: taken from train


def test_too_few_examples_to_split_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", CHAT, CHAT)
    with pytest.raises(DatasetError) as caught:
        read_file_dataset("ds_small", path, "jsonl", False)
    assert caught.value.where == "file" and "too few examples" in caught.value.message
    three = read_file_dataset("ds_three", write_jsonl(path, *[CHAT] * 3), "jsonl", False)
    assert [len(three.splits[name]) for name in ("train", "validation", "test")] == [1, 1, 1]


def test_preview_shows_the_lines_as_they_are(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", PREFERENCE, CHAT)
    assert preview(path, "jsonl", count=1) == {"rows": [PREFERENCE]}


# Uploads through the API


@pytest.fixture(scope="module")
def client(api_key):
    from app.main import app

    with TestClient(app, headers=api_key.headers) as test_client:
        yield test_client


def jsonl(*lines: dict) -> bytes:
    return "\n".join(json.dumps(line) for line in lines).encode()


def upload(client, filename: str, content: bytes, task: str):
    return client.post(
        "/v1/datasets", files={"file": (filename, content)}, data={"name": filename, "task": task}
    )


def test_an_uploaded_chat_file_is_described_with_its_messages_per_role(client):
    response = upload(client, "chat.jsonl", jsonl(*[CHAT] * 20), "chat")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert (
        dataset
        | {
            "task": "chat",
            "format": "jsonl",
            "modality": "chat",
            "num_examples": 20,
            "input_shape": [],
            "labels": [],
            "class_counts": {},
            "role_counts": {"system": 20, "user": 40, "assistant": 40},
        }
        == dataset
    )
    assert sum(dataset["splits"].values()) == 20
    assert client.get(f"/v1/datasets/{dataset['id']}").json() == dataset
    shown = client.get(f"/v1/datasets/{dataset['id']}/preview", params={"count": 2}).json()
    assert shown["rows"] == [CHAT, CHAT]


def test_an_uploaded_preference_file_counts_its_pairs(client):
    response = upload(client, "prefs.jsonl", jsonl(*[PREFERENCE] * 10), "chat")
    assert response.status_code == 201, response.text
    assert response.json()["modality"] == "preference"
    assert response.json()["role_counts"] == {"system": 0, "user": 10, "assistant": 0, "pairs": 10}


def test_other_uploads_have_no_role_counts(client):
    corpus = jsonl(*[{"text": f"document {i}"} for i in range(10)])
    response = upload(client, "corpus.jsonl", corpus, "pretraining")
    assert response.status_code == 201, response.text
    assert response.json()["modality"] == "text" and response.json()["role_counts"] is None


def test_a_chat_upload_for_classification_is_refused_naming_the_task(client):
    body = assert_problem(upload(client, "chat.jsonl", jsonl(CHAT), "classification"), 422)
    error = body["errors"][0]
    assert error["field"] == "task", body
    assert "chat examples carry no class labels" in error["message"]
    assert "task 'chat'" in error["message"]


@pytest.mark.parametrize(
    ("content", "task", "said"),
    [
        (jsonl(*[CHAT] * 5), "pretraining", "upload it with task 'chat'"),
        (jsonl(*[{"text": f"document {i}"} for i in range(10)]), "chat", "holds text data"),
    ],
)
def test_chat_data_and_the_chat_task_go_together(client, content, task, said):
    body = assert_problem(upload(client, "data.jsonl", content, task), 422)
    assert body["errors"][0]["field"] == "task" and said in body["errors"][0]["message"], body


def test_a_bad_chat_upload_is_refused_naming_line_and_field(client):
    content = jsonl(CHAT, chat_with(USER))
    body = assert_problem(upload(client, "chat.jsonl", content, "chat"), 422)
    assert body["errors"][0]["field"] == "file"
    assert body["errors"][0]["message"].startswith("line 2, field 'messages': no assistant")
