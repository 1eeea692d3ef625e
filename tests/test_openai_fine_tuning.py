"""OpenAI's files and fine-tuning API with OpenAI's own Python client, against a real server and
worker fine-tuning a tiny random-weight Llama (saved at test time, configured in their
environment): a chat file uploaded, a supervised job followed to its model, which then answers
chat completions; a DPO job on a preference file; cancels; the job seen by tunery's own routes
too; mistakes refused naming the parameter; and another tenant seeing none of it."""

import time
import uuid

import openai
import pytest
from openai import OpenAI

from tests.test_sft import LOOKUP, SYSTEM, lookup_lines, preference_lines, write_jsonl
from tests.tiny_lm import tiny_llama_stack

pytestmark = pytest.mark.e2e

FINISHED = ("succeeded", "failed", "cancelled")
BASE_LEARNING_RATE = 3e-4  # what a learning_rate_multiplier of 1 means


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with tiny_llama_stack(tmp_path_factory.mktemp("fine-tuning-stack")) as stack:
        yield stack


def openai_client(stack, key: str) -> OpenAI:
    return OpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def client(stack) -> OpenAI:
    return openai_client(stack, stack.key)


@pytest.fixture(scope="module")
def tunery(stack):
    """tunery's own routes, as the same tenant."""
    with stack.client() as tunery:
        yield tunery


def upload(client: OpenAI, path) -> str:
    with path.open("rb") as file:
        return client.files.create(file=file, purpose="fine-tune").id


@pytest.fixture(scope="module")
def training_file(client, tmp_path_factory) -> str:
    """The lookup as OpenAI's chat format has it (no `split`: tunery holds some out)."""
    return upload(
        client, write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", lookup_lines())
    )


@pytest.fixture(scope="module")
def preference_file(client, tmp_path_factory) -> str:
    path = write_jsonl(tmp_path_factory.mktemp("data") / "prefs.jsonl", preference_lines())
    return upload(client, path)


def wait_for(client: OpenAI, job_id: str, statuses, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in statuses:
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    return job


SUFFIX = "lookup"
METADATA = {"team": "search", "run": uuid.uuid4().hex}


@pytest.fixture(scope="module")
def created(client, training_file, tmp_path_factory):
    """A supervised job as the client creates it: `batch_size` and `learning_rate_multiplier`
    left to "auto"."""
    validation = write_jsonl(tmp_path_factory.mktemp("data") / "valid.jsonl", lookup_lines())
    return client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=training_file,
        validation_file=upload(client, validation),
        suffix=SUFFIX,
        seed=7,
        metadata=METADATA,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
    )


@pytest.fixture(scope="module")
def succeeded(client, created, stack):
    job = wait_for(client, created.id, FINISHED)
    assert job.status == "succeeded", stack.logs()
    return job


def test_a_file_is_a_chat_dataset(client, tunery, training_file, tmp_path):
    file = client.files.retrieve(training_file)
    assert (file.object, file.purpose, file.status, file.filename) == (
        "file", "fine-tune", "processed", "train.jsonl"
    )  # fmt: skip
    assert file.bytes == write_jsonl(tmp_path / "same.jsonl", lookup_lines()).stat().st_size
    dataset = tunery.get(f"/v1/datasets/{training_file}").json()
    assert (dataset["task"], dataset["modality"]) == ("chat", "chat")
    assert dataset["num_examples"] == len(LOOKUP)
    assert training_file in [f.id for f in client.files.list()]
    assert list(client.files.list(purpose="batch")) == []

    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("notes.jsonl", b'{"text": "hello"}\n' * 20), purpose="fine-tune")
    assert refused.value.param == "file"
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("train.jsonl", b"{}"), purpose="batch")
    assert purpose.value.param == "purpose" and "fine-tune" in purpose.value.message

    spare = upload(client, write_jsonl(tmp_path / "spare.jsonl", lookup_lines()))
    deleted = client.files.delete(spare)
    assert (deleted.id, deleted.deleted) == (spare, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(spare)
    assert tunery.get(f"/v1/datasets/{spare}").status_code == 404


def test_a_created_job_says_what_it_will_train(created, training_file):
    assert (created.object, created.status, created.model) == (
        "fine_tuning.job",
        "queued",
        "tiny-llama",
    )
    assert (created.training_file, created.seed) == (training_file, 7)
    assert created.metadata == METADATA and created.user_provided_suffix == SUFFIX
    assert created.fine_tuned_model is None and created.finished_at is None
    # "auto": 0.2% of 8 training examples is under 1; a batch of 1 takes the smallest multiplier.
    expected = {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 0.05}
    assert created.hyperparameters.model_dump() == expected
    assert created.method.type == "supervised"
    assert created.method.supervised.hyperparameters.model_dump() == expected
    assert (created.result_files, created.integrations, created.error) == ([], [], None)


def test_the_job_is_a_tunery_job(tunery, succeeded, created, training_file):
    job = tunery.get(f"/v1/jobs/{created.id}").json()
    assert (job["status"], job["result_model_id"]) == ("succeeded", succeeded.fine_tuned_model)
    spec = job["spec"]
    assert spec["model"] == {"architecture": "hf_causal_lm", "params": {"base": "tiny-llama"}}
    assert spec["method"] == {"name": "sft", "params": {}}
    # Each file read whole, as OpenAI reads them: one to train, the other to validate and test.
    whole = {"whole": True, "fraction": None, "per_class": None}
    validation = {"dataset": created.validation_file, **whole}
    assert spec["data"] == {
        "train": {"dataset": training_file, **whole},
        "validation": validation,
        "test": validation,
        "context_length": None,  # forecasting's windows
        "horizon": None,
    }
    assert job["metrics"]["train_examples"] == len(LOOKUP)
    hp = spec["hyperparameters"]
    assert (hp["epochs"], hp["batch_size"], hp["seed"]) == (3, 1, 7)
    assert hp["learning_rate"] == pytest.approx(0.05 * BASE_LEARNING_RATE)
    model = tunery.get(f"/v1/models/{succeeded.fine_tuned_model}").json()
    assert model["name"] == f"ft:tiny-llama:{SUFFIX}" and model["task"] == "causal_lm"
    assert succeeded.trained_tokens == job["metrics"]["trained_tokens"] * 3
    assert succeeded.finished_at >= succeeded.created_at


def test_the_fine_tuned_model_answers_chat_completions(client, succeeded):
    asked = {
        "model": succeeded.fine_tuned_model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "key 1"}],
        "temperature": 0,
        "max_tokens": 6,
    }
    completion = client.chat.completions.create(**asked)
    assert completion.model == succeeded.fine_tuned_model
    text = completion.choices[0].message.content
    streamed = client.chat.completions.create(**asked, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == text


def test_lists_events_and_checkpoints(client, tunery, succeeded):
    listed = client.fine_tuning.jobs.list(metadata={"run": METADATA["run"]})
    assert [job.id for job in listed] == [succeeded.id]
    assert list(client.fine_tuning.jobs.list(metadata={"run": "another"})) == []
    assert succeeded.id in [job.id for job in client.fine_tuning.jobs.list(limit=1)]  # paged

    events = list(client.fine_tuning.jobs.list_events(succeeded.id, limit=1000))
    assert events[0].message.startswith("succeeded") and events[-1].message == "queued"
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    metrics = [e for e in events if e.type == "metrics"]
    points = tunery.get(f"/v1/jobs/{succeeded.id}/metrics").json()["data"]
    assert len(metrics) == len(points)
    train_losses = [e.data["train_loss"] for e in metrics if "train_loss" in e.data]
    assert len(train_losses) == 3  # one an epoch
    assert any("valid_mean_token_accuracy" in e.data for e in metrics)
    # Page by page, `after` the last of each, the client gathers the same events.
    paged = list(client.fine_tuning.jobs.list_events(succeeded.id, limit=2))
    assert [e.id for e in paged] == [e.id for e in events]

    (checkpoint,) = client.fine_tuning.jobs.checkpoints.list(succeeded.id)
    assert checkpoint.fine_tuned_model_checkpoint == succeeded.fine_tuned_model
    assert checkpoint.fine_tuning_job_id == succeeded.id
    metrics_of_job = tunery.get(f"/v1/jobs/{succeeded.id}").json()["metrics"]
    assert checkpoint.step_number == metrics_of_job["steps"] > 3  # the last step
    assert checkpoint.metrics.train_loss == metrics_of_job["train_loss"]
    assert checkpoint.metrics.valid_loss == metrics_of_job["validation_loss"]


def test_a_finished_job_does_not_cancel(client, succeeded):
    with pytest.raises(openai.ConflictError) as conflict:
        client.fine_tuning.jobs.cancel(succeeded.id)
    assert "already succeeded" in conflict.value.message


def test_a_dpo_job_on_a_preference_file(client, tunery, preference_file, stack):
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=preference_file,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}},
    )
    # "auto" for 16 training pairs: epochs to see about 100 of them, 0.2% of 16 pairs a batch.
    resolved = job.method.dpo.hyperparameters
    assert (resolved.n_epochs, resolved.batch_size, resolved.beta) == (6, 1, 0.2)
    job = wait_for(client, job.id, FINISHED)
    assert job.status == "succeeded", stack.logs()
    assert job.trained_tokens is None  # dpo counts no trained tokens
    spec = tunery.get(f"/v1/jobs/{job.id}").json()["spec"]
    assert spec["method"] == {"name": "dpo", "params": {"beta": 0.2}}
    (checkpoint,) = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert checkpoint.metrics.valid_loss is not None
    assert checkpoint.metrics.valid_mean_token_accuracy is None  # dpo reports none


def test_a_running_job_cancels(client, tunery, training_file):
    job = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=training_file, hyperparameters={"n_epochs": 5000}
    )
    wait_for(client, job.id, ("running",))
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    assert tunery.get(f"/v1/jobs/{job.id}").json()["status"] == "cancelled"
    assert client.fine_tuning.jobs.list_events(job.id, limit=1).data[0].message == "cancelled"


def test_a_job_of_tunerys_own_route_is_a_fine_tuning_job(client, tunery, training_file):
    spec = {
        "kind": "finetune",
        "model": {"architecture": "hf_causal_lm", "params": {"base": "tiny-llama"}},
        "method": {"name": "sft"},
        "data": {"train": training_file},
        "hyperparameters": {"epochs": 2, "batch_size": 4, "learning_rate": 3e-3},
    }
    made = tunery.post("/v1/jobs", json=spec).json()
    job = client.fine_tuning.jobs.retrieve(made["id"])
    assert (job.model, job.training_file, job.seed) == ("tiny-llama", training_file, 0)
    assert job.hyperparameters.model_dump() == {
        "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 10.0
    }  # fmt: skip
    assert (job.metadata, job.user_provided_suffix) == (None, None)
    assert tunery.post(f"/v1/jobs/{made['id']}/cancel").status_code == 200
    assert client.fine_tuning.jobs.retrieve(made["id"]).status == "cancelled"
    # A job of another method is no fine-tuning job.
    digits = {
        "kind": "finetune",
        "model": {"architecture": "mlp"},
        "data": {"train": "builtin:digits"},
    }
    other = tunery.post("/v1/jobs", json=digits).json()
    tunery.post(f"/v1/jobs/{other['id']}/cancel")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve(other["id"])
    assert other["id"] not in [j.id for j in client.fine_tuning.jobs.list(limit=1000)]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"training_file": "ds_" + "0" * 32}, "training_file"),
        ({"validation_file": "file-abc"}, "validation_file"),
        ({"model": "gpt-4o-mini"}, "model"),
        ({"model": "model_" + "0" * 32}, "model"),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}},
            "method.supervised.hyperparameters.n_epochs",
        ),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"batch_size": "big"}}, "hyperparameters.batch_size"),
        ({"method": {"type": "dpo"}}, "training_file"),  # a chat file, no preference pairs
        ({"suffix": "x" * 65}, "suffix"),
    ],
)
def test_mistakes_are_400s_naming_the_parameter(client, training_file, change, param):
    asked = {"model": "tiny-llama", "training_file": training_file} | change
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(**asked)
    assert (refused.value.param, refused.value.type) == (param, "invalid_request_error")


def test_a_preference_pair_over_the_models_length_is_refused_naming_its_line(client, tmp_path):
    lines = preference_lines()
    lines[1]["preferred_output"][0]["content"] = "the quick brown fox " * 300
    long_file = upload(client, write_jsonl(tmp_path / "long-prefs.jsonl", lines))
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(
            model="tiny-llama", training_file=long_file, method={"type": "dpo"}
        )
    assert refused.value.param == "training_file"
    assert "1 example(s) over the model's max_length of 512 tokens: line 2 (" in str(refused.value)


def test_another_tenant_sees_neither_the_job_nor_the_file(stack, client, created, training_file):
    stranger = openai_client(stack, stack.new_key())
    unknown_job, unknown_file = "job_" + "0" * 32, "ds_" + "0" * 32
    for call, theirs, unknown in [
        (stranger.fine_tuning.jobs.retrieve, created.id, unknown_job),
        (stranger.fine_tuning.jobs.cancel, created.id, unknown_job),
        (stranger.fine_tuning.jobs.list_events, created.id, unknown_job),
        (stranger.fine_tuning.jobs.checkpoints.list, created.id, unknown_job),
        (stranger.files.retrieve, training_file, unknown_file),
        (stranger.files.delete, training_file, unknown_file),
    ]:
        with pytest.raises(openai.NotFoundError) as refused:
            call(theirs)
        with pytest.raises(openai.NotFoundError) as missing:
            call(unknown)
        assert refused.value.message == missing.value.message.replace(unknown, theirs)
    assert list(stranger.fine_tuning.jobs.list()) == list(stranger.files.list()) == []
    with pytest.raises(openai.BadRequestError) as refused:
        stranger.fine_tuning.jobs.create(model="tiny-llama", training_file=training_file)
    assert refused.value.param == "training_file"
    assert client.files.retrieve(training_file).id == training_file  # nothing was changed
    assert client.fine_tuning.jobs.retrieve(created.id).status == "succeeded"
