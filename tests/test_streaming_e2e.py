"""Streamed datasets against real processes: a moto S3 server holding the artifact store and a
corpus of shards, the API server, and a worker whose trainer streams them.

A large text upload is checked as a stream and recorded as a whole read would record it; a
dataset registered by reference to an allowed S3 prefix is checked row by row and recorded with
each shard's ETag; a job trains on it from S3, and a shard changed since fails the job rather
than train on what was never checked."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.stack import postgres_redis_stack
from tests.test_api import assert_problem
from tests.test_e2e import finished, wait_for
from tests.test_streaming import documents
from tests.test_uploads_e2e import AWS, s3  # noqa: F401 (fixture)
from trainer.readers import DatasetError, read_dataset

pytestmark = pytest.mark.e2e

STREAM_OVER = 16 * 1024  # uploads larger than this are streamed
LM = {
    "kind": "pretrain",
    "model": {"architecture": "transformer", "params": {"vocab_size": 200, "max_length": 16}},
    "method": {"name": "causal_lm"},
    "hyperparameters": {"epochs": 1, "batch_size": 32},
}


@pytest.fixture(scope="module")
def stack(s3, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    endpoint, bucket, _client = s3
    env = {
        **AWS,
        "TUNERY_ARTIFACT_STORE_URL": f"s3://{bucket}/tunery",
        "TUNERY_S3_ENDPOINT_URL": endpoint,
        "TUNERY_STREAM_UPLOADS_OVER_BYTES": str(STREAM_OVER),
        "TUNERY_DATASET_SOURCES": f"s3://{bucket}/corpora/",
    }
    root = tmp_path_factory.mktemp("streaming")
    with postgres_redis_stack(root, "streaming", extra_env=env) as stack:
        yield stack


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def _parquet(rows: list[dict], path: Path) -> bytes:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=200)
    return path.read_bytes()


def _log(api, job_id: str) -> list[str]:
    return [e["message"] for e in api.get(f"/v1/jobs/{job_id}/events").json()["data"]]


def test_a_large_text_upload_is_checked_as_a_stream_and_trains_as_one(stack, tmp_path):
    content = _jsonl(documents(0, 1200))
    assert len(content) > STREAM_OVER
    (tmp_path / "topics.jsonl").write_bytes(content)
    whole = read_dataset(tmp_path / "topics.jsonl", "jsonl", True)
    with stack.client() as api:
        response = api.post(
            "/v1/datasets",
            files={"file": ("topics.jsonl", content)},
            data={"name": "topics", "task": "classification"},
        )
        assert response.status_code == 201, response.text
        dataset = response.json()
        # The record a whole read makes, and the shard it is streamed from.
        assert dataset["num_examples"] == len(whole) == 1200
        assert dataset["labels"] == list(whole.labels)
        assert dataset["class_counts"] == {"business": 400, "sport": 400, "tech": 400}
        assert sum(dataset["splits"].values()) == 1200
        (shard,) = dataset["stream"]["shards"]
        assert shard["key"] == f"datasets/sha256/{dataset['sha256']}"
        assert shard["rows"] == 1200 and shard["train_rows"] == dataset["splits"]["train"]

        # A bad row far into it: the 422 a whole read gives.
        rows = documents(0, 1200)
        rows[1100]["label"] = None
        (tmp_path / "bad.jsonl").write_bytes(_jsonl(rows))
        with pytest.raises(DatasetError) as expected:
            read_dataset(tmp_path / "bad.jsonl", "jsonl", True)
        response = api.post(
            "/v1/datasets",
            files={"file": ("bad.jsonl", _jsonl(rows))},
            data={"name": "bad", "task": "classification"},
        )
        problem = assert_problem(response, 422)
        assert problem["errors"] == [{"field": "file", "message": str(expected.value)}]

        # A method that reads its data whole is refused it; supervised and causal_lm stream it.
        simcse = {**LM, "method": {"name": "simcse"}, "data": {"train": dataset["id"]}}
        problem = assert_problem(api.post("/v1/jobs", json=simcse), 422)
        assert problem["errors"][0]["field"] == "data.train"
        assert "streamed" in problem["errors"][0]["message"]
        classifier = {
            "kind": "finetune",
            "model": {"architecture": "gru", "params": {"vocab_size": 200, "max_length": 16}},
            "data": {"train": dataset["id"]},
            "hyperparameters": {"epochs": 2, "batch_size": 32},
        }
        job = api.post("/v1/jobs", json=classifier)
        assert job.status_code == 201, job.text
        job = wait_for(api, job.json()["id"], finished, timeout=300)
        assert job["status"] == "succeeded", (job, stack.logs())
        model = api.get(f"/v1/models/{job['result_model_id']}").json()
        assert model["labels"] == dataset["labels"]  # as its check recorded them
        assert job["metrics"]["train_examples"] == dataset["splits"]["train"]
        assert job["metrics"]["test_accuracy"] > 0.9, job["metrics"]
        job = api.post("/v1/jobs", json={**LM, "data": {"train": dataset["id"]}})
        assert job.status_code == 201, job.text
        job = wait_for(api, job.json()["id"], finished, timeout=300)
        assert job["status"] == "succeeded", (job, stack.logs())
        train = dataset["splits"]["train"]
        told = f"{train} streamed training texts in 1 shard(s) (each epoch sees {train})"
        assert any(told in line for line in _log(api, job["id"]))


def test_shards_registered_by_reference_are_checked_and_trained_on_as_checked(
    stack,
    s3,  # noqa: F811
    tmp_path,
):
    _endpoint, bucket, client = s3
    keys = []
    for part in range(3):
        key = f"corpora/web/part-{part}.parquet"
        body = _parquet(documents(part * 500, 500, labelled=False), tmp_path / f"{part}.parquet")
        client.put_object(Bucket=bucket, Key=key, Body=body)
        keys.append(key)
    client.put_object(Bucket=bucket, Key="corpora/web/_SUCCESS", Body=b"")  # not a shard
    bad_rows = documents(0, 300, labelled=False)
    bad_rows[250]["text"] = " "
    client.put_object(Bucket=bucket, Key="corpora/bad/a.jsonl", Body=_jsonl(bad_rows))
    client.put_object(Bucket=bucket, Key="elsewhere/a.jsonl", Body=_jsonl(documents(0, 10)))
    with stack.client() as api:
        register = {"name": "web", "task": "pretraining", "uri": f"s3://{bucket}/corpora/web"}
        response = api.post("/v1/datasets/references", json=register)
        assert response.status_code == 201, response.text
        dataset = response.json()
        assert dataset["num_examples"] == 1500 and dataset["format"] == "parquet"
        stream = dataset["stream"]
        assert stream["source"] == f"s3://{bucket}/corpora/web/"
        assert [s["key"] for s in stream["shards"]] == [f"s3://{bucket}/{k}" for k in keys]
        for shard, key in zip(stream["shards"], keys, strict=True):
            head = client.head_object(Bucket=bucket, Key=key)
            assert shard["etag"] == head["ETag"] and shard["size_bytes"] == head["ContentLength"]
            assert shard["rows"] == 500
        preview = api.get(f"/v1/datasets/{dataset['id']}/preview?count=2").json()
        assert [row["text"] for row in preview["rows"]] == [
            documents(0, 2, labelled=False)[i]["text"] for i in range(2)
        ]

        # Outside the allowed sources, not S3, a bad row: each a 422 naming where.
        for uri, words in [
            (f"s3://{bucket}/elsewhere/", "not within the sources"),
            (f"s3://{bucket}/corpora/../elsewhere/", "'..'"),
            ("https://example.com/corpus/", "give an S3 prefix"),
            (f"s3://{bucket}/corpora/none/", "no .jsonl or .parquet"),
        ]:
            response = api.post("/v1/datasets/references", json={**register, "uri": uri})
            problem = assert_problem(response, 422)
            assert problem["errors"][0]["field"] == "uri" and words in problem["detail"], uri
        bad = {**register, "uri": f"s3://{bucket}/corpora/bad/"}
        problem = assert_problem(api.post("/v1/datasets/references", json=bad), 422)
        message = "shard 'a.jsonl', line 251: `text` must be a non-empty string"
        assert problem["errors"] == [{"field": "file", "message": message}]

        job = api.post("/v1/jobs", json={**LM, "data": {"train": dataset["id"]}})
        assert job.status_code == 201, job.text
        job = wait_for(api, job.json()["id"], finished, timeout=300)
        assert job["status"] == "succeeded", (job, stack.logs())
        train = dataset["splits"]["train"]
        told = f"{train} streamed training texts in 3 shard(s) (each epoch sees {train})"
        assert any(told in line for line in _log(api, job["id"]))

        # A shard rewritten since it was checked: the job fails rather than train on it.
        changed = _parquet(documents(0, 400, labelled=False), tmp_path / "changed.parquet")
        client.put_object(Bucket=bucket, Key=keys[1], Body=changed)
        job = api.post("/v1/jobs", json={**LM, "data": {"train": dataset["id"]}})
        job = wait_for(api, job.json()["id"], finished, timeout=300)
        assert job["status"] == "failed"
        assert job["error"]["type"] == "dataset_changed", job["error"]
        assert keys[1] in job["error"]["message"]
