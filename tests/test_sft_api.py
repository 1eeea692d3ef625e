"""`sft` through the service: a chat dataset uploaded, a job on a real worker fine-tuning a
tiny random-weight Llama saved at test time, its mistakes refused at submission naming the
field, and the Hugging Face download answering the lookup it learnt with `transformers` alone,
in a clean process."""

import io
import json
import subprocess
import sys
import zipfile

import pytest

from tests.test_e2e import finished, wait_for
from tests.test_sft import LOOKUP, SYSTEM, lookup_lines, write_jsonl
from tests.tiny_lm import tiny_llama_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with tiny_llama_stack(tmp_path_factory.mktemp("sft-stack")) as stack:
        yield stack


@pytest.fixture(scope="module")
def client(stack):
    with stack.client() as client:
        yield client


@pytest.fixture(scope="module")
def lookup(client, tmp_path_factory) -> str:
    lines = [line for split in ("train", "validation", "test") for line in lookup_lines(split)]
    path = write_jsonl(tmp_path_factory.mktemp("data") / "lookup.jsonl", lines)
    with path.open("rb") as file:
        response = client.post(
            "/v1/datasets",
            files={"file": ("lookup.jsonl", file)},
            data={"name": "lookup", "task": "chat"},
        )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def sft_job(dataset: str, **changes) -> dict:
    spec = {
        "kind": "finetune",
        "model": {
            "architecture": "hf_causal_lm",
            "params": {"base": "tiny-llama", "max_length": 64},
        },
        "method": {"name": "sft"},
        "data": {"train": dataset},
        "hyperparameters": {"epochs": 80, "batch_size": 4, "learning_rate": 3e-3},
    }
    return spec | changes


GENERATE_IN_CLEAN_PROCESS = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
answers = {}
for key in json.loads(sys.argv[2]):
    messages = [{"role": "system", "content": sys.argv[3]}, {"role": "user", "content": key}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    answers[key] = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
assert not any(name.split(".")[0] in ("app", "worker", "trainer") for name in sys.modules)
print(json.dumps(answers))
"""


def test_an_sft_job_teaches_the_lookup_and_downloads_for_transformers(
    stack, client, lookup, tmp_path
):
    job = client.post("/v1/jobs", json=sft_job(lookup)).json()
    job = wait_for(client, job["id"], finished, timeout=600)
    assert job["status"] == "succeeded", stack.logs()
    metrics = job["metrics"]
    assert metrics["validation_token_accuracy"] > 0.9 and metrics["validation_perplexity"] < 1.5
    points = client.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]
    names = {(p["name"], p["split"]) for p in points}
    assert {("token_accuracy", "validation"), ("perplexity", "validation")} <= names
    model = client.get(f"/v1/models/{job['result_model_id']}").json()
    assert (model["architecture"], model["task"]) == ("hf_causal_lm", "causal_lm")

    download = client.get(f"/v1/models/{model['id']}/download", params={"format": "hf"})
    assert download.status_code == 200, download.text
    zipfile.ZipFile(io.BytesIO(download.content)).extractall(tmp_path / "hf")
    done = subprocess.run(
        [sys.executable, "-c", GENERATE_IN_CLEAN_PROCESS, str(tmp_path / "hf"),
         json.dumps(list(LOOKUP)), SYSTEM],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert sum(answers[key].strip() == value for key, value in LOOKUP.items()) >= 6, answers


@pytest.mark.parametrize(
    ("change", "field", "said"),
    [
        ({"data": {"train": "builtin:bbc-news"}}, "data.train", "does not read text data"),
        (
            {"model": {"architecture": "hf_encoder", "params": {}}},
            "model.architecture",
            "reads both ways",
        ),
        (
            {
                "model": {"architecture": "transformer", "params": {}},
                "method": {"name": "sft", "params": {"lora_rank": 4}},
            },
            "method.params.lora_rank",
            "LoRA adapters are for",
        ),
        (
            {"model": {"architecture": "hf_causal_lm", "params": {"base": "all-minilm-l6-v2"}}},
            "model.params.base",
            "is not a causal language model",
        ),
        (
            {"data": {"train": "LOOKUP", "validation": "builtin:bbc-news"}},
            "data.validation",
            "holds text data",
        ),
        (
            {"method": {"name": "sft", "params": {"truncation": "drop"}}},
            "method.params.truncation",
            "'refuse' or 'truncate'",
        ),
    ],
)
def test_sft_mistakes_are_422_naming_the_field(client, lookup, change, field, said):
    if "data" in change:  # the uploaded dataset's id is known only now
        change = {"data": {k: lookup if v == "LOOKUP" else v for k, v in change["data"].items()}}
    response = client.post("/v1/jobs", json=sft_job(lookup, **change))
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert any(e["field"] == field and said in e["message"] for e in errors), errors


def upload_chat(client, path) -> str:
    with path.open("rb") as file:
        response = client.post(
            "/v1/datasets",
            files={"file": (path.name, file)},
            data={"name": path.stem, "task": "chat"},
        )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_chat_upload_counts_its_tokens_under_the_tokenizer_it_names(stack, client, tmp_path):
    from transformers import AutoTokenizer

    lines = lookup_lines()
    path = write_jsonl(tmp_path / "counted.jsonl", lines)
    with path.open("rb") as file:
        response = client.post(
            "/v1/datasets",
            files={"file": (path.name, file)},
            data={"name": "counted", "task": "chat", "tokenizer": "tiny-llama"},
        )
    assert response.status_code == 201, response.text
    # transformers renders each conversation whole with the base's template: the same tokens.
    hf = AutoTokenizer.from_pretrained(json.loads(stack.env["TUNERY_HF_MODEL_DIRS"])["tiny-llama"])
    lengths = [
        len(hf.apply_chat_template(line["messages"], return_dict=True)["input_ids"])
        for line in lines
    ]
    assert response.json()["token_counts"] == {
        "tokenizer": "tiny-llama", "tokens": sum(lengths), "longest_example": max(lengths)
    }  # fmt: skip
    assert client.get("/v1/datasets", params={"limit": 1}).json()["data"][0]["token_counts"]


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({"task": "chat", "tokenizer": "all-minilm-l6-v2"}, "is not a causal language model"),
        ({"task": "chat", "tokenizer": "no-such-model"}, "no-such-model"),
        ({"task": "chat", "tokenizer": "model_" + "0" * 32}, "no model"),
        ({"task": "classification", "tokenizer": "tiny-llama"}, "with task 'chat'"),
    ],
)
def test_an_upload_with_a_tokenizer_that_cannot_count_is_refused(client, tmp_path, data, said):
    path = write_jsonl(tmp_path / "refused.jsonl", lookup_lines())
    before = client.get("/v1/datasets", params={"limit": 1000}).json()["data"]
    with path.open("rb") as file:
        response = client.post(
            "/v1/datasets", files={"file": (path.name, file)}, data={"name": "refused", **data}
        )
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["field"] == "tokenizer" and said in error["message"], error
    assert client.get("/v1/datasets", params={"limit": 1000}).json()["data"] == before


def test_examples_over_max_length_are_refused_at_submission_naming_their_lines(client, tmp_path):
    """Tokenized with the base's tokenizer and chat template before anything is queued; the
    job's `truncation: truncate` takes them."""
    lines = lookup_lines()
    long = {"role": "user", "content": "reverse this word, then say it again. " * 20}
    for index in (2, 4):  # lines 3 and 5
        lines[index] = {"messages": [long, {"role": "assistant", "content": "again"}]}
    dataset = upload_chat(client, write_jsonl(tmp_path / "long.jsonl", lines))
    before = len(client.get("/v1/jobs", params={"limit": 100}).json()["data"])
    refused = client.post("/v1/jobs", json=sft_job(dataset))
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["field"] == "data.train"
    assert "2 example(s) over the model's max_length of 64 tokens: line 3 (" in error["message"]
    assert "line 5 (" in error["message"] and "truncation to truncate" in error["message"]
    assert len(client.get("/v1/jobs", params={"limit": 100}).json()["data"]) == before
    # The same with a longer max_length, or cut to it, is queued.
    params = {"base": "tiny-llama", "max_length": 512}
    longer = {"model": {"architecture": "hf_causal_lm", "params": params}}
    cut = {"method": {"name": "sft", "params": {"truncation": "truncate"}}}
    for change in (longer, cut):
        queued = client.post("/v1/jobs", json=sft_job(dataset, **change))
        assert queued.status_code == 201, queued.text
        client.post(f"/v1/jobs/{queued.json()['id']}/cancel")


def test_a_classifier_is_no_base_for_sft(client, lookup):
    imported = client.post("/v1/models/import", data={"hf_model": "all-minilm-l6-v2"})
    assert imported.status_code == 201, imported.text
    spec = sft_job(lookup)
    del spec["model"]
    response = client.post("/v1/jobs", json=spec | {"base_model_id": imported.json()["id"]})
    assert response.status_code == 422, response.text
    fields = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert "starts from a causal_lm model, not a features model" in fields["base_model_id"]


def test_training_on_a_whole_dataset_needs_validation_and_test_data_of_another(client, lookup):
    whole = {"dataset": lookup, "whole": True}
    response = client.post("/v1/jobs", json=sft_job(lookup, data={"train": whole}))
    assert response.status_code == 422, response.text
    fields = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert set(fields) == {"data.validation", "data.test"}
    assert f"data.train reads every example of {lookup}" in fields["data.validation"]
