"""Uploads against real processes: an S3-protocol server (moto), the API server and a Celery
worker that reads the datasets back from the bucket, as workers on other machines would.

Also the limits that protect the server: bodies over the size limit are refused while they
stream, and decompression bombs (zip, npz, parquet) past the `EXPANDED_LIMIT` budget are
refused, all without the server's peak memory growing past `MEMORY_BOUND`.
"""

import os
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import files
from tests.servers import S3_CREDENTIALS, moto_s3
from tests.stack import postgres_redis_stack, trainer_pids
from tests.test_e2e import finished, wait_for

pytestmark = pytest.mark.e2e

UPLOAD_LIMIT = 32 * 1024**2
EXPANDED_LIMIT = 256 * 1024**2  # what a dataset may take decoded (the bombs take more)
MEMORY_BOUND = 64 * 1024**2  # growth of the API server's resident memory
AWS = S3_CREDENTIALS


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server in its own process, and a fresh bucket on it."""
    import boto3

    with moto_s3(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        bucket = f"tunery-{uuid.uuid4().hex[:8]}"
        client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
        client.create_bucket(Bucket=bucket)
        yield endpoint, bucket, client


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS["AWS_DEFAULT_REGION"],
    }


@pytest.fixture(scope="module")
def stack(s3, tmp_path_factory):
    endpoint, bucket, _client = s3
    env = {
        **AWS,
        "TUNERY_ARTIFACT_STORE_URL": f"s3://{bucket}/tunery",
        "TUNERY_S3_ENDPOINT_URL": endpoint,
        "TUNERY_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "TUNERY_MAX_ARCHIVE_EXPANDED_BYTES": str(EXPANDED_LIMIT),
        "TUNERY_CHECKPOINT_EVERY_STEPS": "10",
        "TUNERY_LEASE_SECONDS": "4",
    }
    root = tmp_path_factory.mktemp("uploads")
    with postgres_redis_stack(root, "uploads", extra_env=env) as stack:
        yield stack


def test_the_s3_store_shows_a_file_only_whole_and_fetches_it_once(s3, tmp_path):
    from app.storage import S3Store

    endpoint, bucket, _client = s3
    os.environ.update(AWS)
    store = S3Store(f"s3://{bucket}/unit", tmp_path / "cache", endpoint)
    source = tmp_path / "blob"
    source.write_bytes(b"x" * 100_000)
    assert not store.exists("datasets/sha256/abc")
    store.put("datasets/sha256/abc", source)
    assert store.exists("datasets/sha256/abc")
    local = store.local_path("datasets/sha256/abc")
    assert local.read_bytes() == source.read_bytes()
    assert list(local.parent.iterdir()) == [local]  # no partial file left beside it
    store.delete("datasets/sha256/abc")
    assert not store.exists("datasets/sha256/abc")


TINY_CNN = {"architecture": "cnn", "params": {"channels": [8, 16], "hidden": 32}}
MLP = {"architecture": "mlp"}
FORMATS = [
    ("digits.npz", files.digits_npz(300), "classification", "finetune", TINY_CNN),
    ("digits.zip", files.digits_zip(200), "classification", "finetune", TINY_CNN),
    ("cancer.csv", files.cancer_csv(200), "classification", "finetune", MLP),
    ("cancer.parquet", files.cancer_parquet(), "classification", "finetune", MLP),
    (
        "topics.jsonl",
        files.topics_jsonl(120),
        "classification",
        "finetune",
        {"architecture": "gru", "params": {"vocab_size": 200, "max_length": 32}},
    ),
    (
        "corpus.jsonl",
        files.topics_jsonl(120, labelled=False),
        "pretraining",
        "pretrain",
        {"architecture": "transformer", "params": {"vocab_size": 200, "max_length": 32}},
    ),
    ("flat.zip", files.digits_zip(100, labelled=False), "pretraining", "pretrain", TINY_CNN),
]


def test_each_format_uploads_to_s3_and_a_worker_trains_on_it(stack, s3):
    _endpoint, bucket, client = s3
    with stack.client() as api:
        jobs = {}
        for filename, content, task, kind, model in FORMATS:
            response = api.post(
                "/v1/datasets",
                files={"file": (filename, content)},
                data={"name": filename, "task": task},
            )
            assert response.status_code == 201, response.text
            dataset = response.json()
            key = f"tunery/datasets/sha256/{dataset['sha256']}"
            assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == content
            spec = {
                "kind": kind,
                "model": model,
                "data": {"train": dataset["id"]},
                "hyperparameters": {"epochs": 2, "batch_size": 16},
            }
            if kind == "pretrain":
                method = "causal_lm" if filename.endswith(".jsonl") else "autoencoder"
                spec["method"] = {"name": method}
            job = api.post("/v1/jobs", json=spec)
            assert job.status_code == 201, job.text
            jobs[filename] = job.json()["id"]
        for filename, job_id in jobs.items():
            job = wait_for(api, job_id, finished, timeout=300)
            assert job["status"] == "succeeded", (filename, job, stack.logs())
            metric = "val_perplexity" if filename == "corpus.jsonl" else None
            assert metric is None or job["metrics"][metric] > 0


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def _peak_growth(pid: int, request: Callable[[], httpx.Response]) -> tuple[httpx.Response, int]:
    """The response, and how far the server's peak resident memory (VmHWM) rose above what it
    held before the request: a spike freed again before the request ends still counts."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak starts again from the current RSS
    before = _status_bytes(pid, "VmHWM")
    response = request()
    return response, _status_bytes(pid, "VmHWM") - before


def _zip_bomb(path: Path, expanded: int) -> None:
    """One member of `expanded` zero bytes: about 1 MB on disk per GB expanded."""
    chunk = bytes(1024**2)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("0/zeros.png", "w", force_zip64=True) as member,
    ):
        for _ in range(expanded // len(chunk)):
            member.write(chunk)


def _npz_bomb(path: Path, pixels: int) -> None:
    """`pixels` zero bytes as uint8 images, with labels; about 1 MB on disk per GB."""
    x = np.zeros((pixels // 784, 28, 28), dtype=np.uint8)
    np.savez_compressed(path, x=x, y=np.arange(len(x)) % 2)


def _parquet_run_bomb(path: Path, rows: int) -> None:
    """A column of `rows` zeros: run-length encoded into a few kilobytes."""
    pq.write_table(pa.table({"label": np.zeros(rows, dtype=np.int64)}), path)


def _parquet_dictionary_bomb(path: Path, rows: int) -> None:
    """One 10 kB string repeated in every row: dictionary encoded, stored once. Without the
    schema pyarrow writes beside it, a reader decodes it to `rows` strings."""
    indices = pa.array(np.zeros(rows, dtype=np.int32))
    text = pa.DictionaryArray.from_arrays(indices, pa.array(["x" * 10_000]))
    table = pa.table({"text": text, "label": np.arange(rows) % 2})
    pq.write_table(table, path, store_schema=False)


BOMBS = {  # name: (file, what makes it, the refusal's words)
    "zip": ("bomb.zip", lambda path: _zip_bomb(path, 200 * 1024**2), "compression ratio"),
    "npz stored": ("bomb.npz", lambda path: _npz_bomb(path, 512 * 1024**2), "would expand"),
    "npz as float32": ("bomb.npz", lambda path: _npz_bomb(path, 96 * 1024**2), "in memory"),
    "parquet runs": ("bomb.parquet", lambda path: _parquet_run_bomb(path, 40 * 10**6), "decode"),
    "parquet dictionary": (
        "bomb.parquet",
        lambda path: _parquet_dictionary_bomb(path, 10**5),
        "decode",
    ),
}


def test_oversized_bodies_are_refused_while_they_stream(stack):
    api_pid = stack.processes[0].pid
    with stack.client() as api:
        api.get("/v1/datasets")  # warm the server up before measuring

        def too_big():  # no Content-Length: the server must count as it reads
            yield (
                b"--xyz\r\nContent-Disposition: form-data; name=file; filename=big.npz\r\n"
                b"Content-Type: application/octet-stream\r\n\r\n"
            )
            for _ in range(UPLOAD_LIMIT // 2**20 * 2):
                yield b"0" * 2**20

        headers = {"content-type": "multipart/form-data; boundary=xyz"}
        streamed, growth = _peak_growth(
            api_pid, lambda: api.post("/v1/datasets", content=too_big(), headers=headers)
        )
        assert streamed.status_code == 413, streamed.text
        assert streamed.headers["content-type"] == "application/problem+json"
        assert growth < MEMORY_BOUND
        declared = api.post("/v1/datasets", content=b"0" * (UPLOAD_LIMIT + 1), headers=headers)
        assert declared.status_code == 413


@pytest.mark.parametrize("kind", list(BOMBS))
def test_a_decompression_bomb_is_refused_with_flat_memory(stack, tmp_path, kind):
    filename, make, words = BOMBS[kind]
    bomb = tmp_path / filename
    make(bomb)
    assert bomb.stat().st_size < 2 * 1024**2
    api_pid = stack.processes[0].pid
    name = f"bomb-{uuid.uuid4().hex[:8]}"
    with stack.client() as api, open(bomb, "rb") as f:
        api.get("/v1/datasets")  # warm the server up before measuring
        response, growth = _peak_growth(
            api_pid,
            lambda: api.post(
                "/v1/datasets",
                files={"file": (filename, f)},
                data={"name": name, "task": "classification"},
            ),
        )
        assert response.status_code == 422, response.text
        assert words in response.json()["errors"][0]["message"]
        assert growth < MEMORY_BOUND, f"the server's peak memory rose {growth >> 20} MiB"
        names = [d["name"] for d in api.get("/v1/datasets", params={"limit": 1000}).json()["data"]]
        assert name not in names


def test_a_checkpoint_follows_its_job_to_another_machine(stack, s3):
    """The worker dies with its disk: the next worker finds the checkpoint in the bucket,
    which keeps it once the job is over."""
    import shutil
    import signal

    from tests.test_chaos import LONG_JOB, running_past_a_checkpoint

    _endpoint, bucket, client = s3
    job = {**LONG_JOB, "hyperparameters": {**LONG_JOB["hyperparameters"], "epochs": 10}}
    with stack.client() as api:
        job_id = api.post("/v1/jobs", json=job).json()["id"]
        running_past_a_checkpoint(api, job_id)
        key = f"tunery/checkpoints/{job_id}/"
        deadline = time.monotonic() + 30
        while "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix=key):
            assert time.monotonic() < deadline, "no checkpoint reached the bucket"
            time.sleep(0.2)
        worker = stack.processes[1]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        # Its trainer dies with it a moment later (PDEATHSIG), maybe while saving: then the
        # machine is gone, its disk with it.
        deadline = time.monotonic() + 20
        while trainer_pids(job_id):
            assert time.monotonic() < deadline, "the trainer outlived its worker"
            time.sleep(0.1)
        shutil.rmtree(Path(stack.env["TUNERY_RUN_DIR"]) / job_id)
        stack.start_worker()
        job = wait_for(api, job_id, finished, timeout=300)
        assert (job["status"], job["attempt"]) == ("succeeded", 2), (job, stack.logs())
        events = api.get(f"/v1/jobs/{job_id}/events").json()["data"]
        resumed = [e for e in events if e["message"].startswith("resumed from the checkpoint")]
        assert len(resumed) == 1, events
        # What the retention policy keeps stays in the bucket (by default the last), no more.
        [kept] = api.get(f"/v1/jobs/{job_id}/checkpoints").json()["data"]
        stored = client.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]
        assert [o["Key"] for o in stored] == [f"{key}attempt-2/step-{kept['step']:09d}.pt"]
