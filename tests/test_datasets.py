"""Dataset uploads through the /v1 API in-process, on Postgres, with the local store."""

import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests import files
from tests.test_api import assert_problem, dataset_count


@pytest.fixture(scope="module")
def client(api_key):
    from app.main import app

    with TestClient(app, headers=api_key.headers) as test_client:
        yield test_client


def stored_files() -> set[Path]:
    root = Path(os.environ["TUNERY_ARTIFACT_DIR"]) / "datasets"
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def upload(client, filename: str, content: bytes, task: str = "classification", **form):
    return client.post(
        "/v1/datasets",
        files={"file": (filename, content)},
        data={"name": filename, "task": task, **form},
    )


@pytest.mark.parametrize(
    ("filename", "content", "task", "expected"),
    [
        (
            "digits.npz",
            files.digits_npz(300),
            "classification",
            {"modality": "image", "num_examples": 300, "input_shape": [1, 8, 8]},
        ),
        (
            "cancer.csv",
            files.cancer_csv(200),
            "classification",
            {"modality": "tabular", "num_examples": 200, "input_shape": [8]},
        ),
        (
            "cancer.parquet",
            files.cancer_parquet(200),
            "classification",
            {"modality": "tabular", "num_examples": 200, "input_shape": [8]},
        ),
        (
            "topics.jsonl",
            files.topics_jsonl(120),
            "classification",
            {"modality": "text", "num_examples": 120, "input_shape": []},
        ),
        (
            "corpus.jsonl",
            files.topics_jsonl(120, labelled=False),
            "pretraining",
            {"modality": "text", "num_examples": 120, "labels": []},
        ),
        (
            "digits.zip",
            files.digits_zip(200),
            "classification",
            {"modality": "image", "num_examples": 200, "input_shape": [1, 8, 8]},
        ),
        (
            "flat.zip",
            files.digits_zip(50, labelled=False),
            "pretraining",
            {"modality": "image", "num_examples": 50, "labels": []},
        ),
    ],
)
def test_each_format_is_described_and_stored_by_content(client, filename, content, task, expected):
    response = upload(client, filename, content, task)
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["id"].startswith("ds_")
    assert dataset | expected == dataset
    assert dataset["format"] == filename.rsplit(".", 1)[1]
    assert dataset["sha256"] == hashlib.sha256(content).hexdigest()
    assert dataset["size_bytes"] == len(content)
    assert sum(dataset["splits"].values()) == dataset["num_examples"]
    assert dataset["splits"]["train"] > dataset["splits"]["test"] > 0
    if task == "classification":
        assert sum(dataset["class_counts"].values()) == dataset["num_examples"]
        assert len(dataset["labels"]) >= 2
    stored = Path(os.environ["TUNERY_ARTIFACT_DIR"]) / "datasets/sha256" / dataset["sha256"]
    assert stored.read_bytes() == content
    assert client.get(f"/v1/datasets/{dataset['id']}").json() == dataset
    preview = client.get(f"/v1/datasets/{dataset['id']}/preview", params={"count": 3}).json()
    if dataset["modality"] == "image":
        import base64

        image = Image.open(io.BytesIO(base64.b64decode(preview["images"][0]["png_base64"])))
        assert image.size == (8, 8)
        assert len(preview["images"]) == 3
    else:
        assert len(preview["rows"]) == 3


def test_tabular_features_name_one_hot_categories(client):
    dataset = upload(client, "cancer.csv", files.cancer_csv(100)).json()
    assert dataset["feature_names"][-2:] == ["size=large", "size=small"]
    assert dataset["labels"] == ["benign", "malignant"]
    assert dataset["label_column"] == "label"


def test_the_same_bytes_twice_are_stored_once(client):
    content = files.digits_npz(120)
    first, second = (upload(client, "twice.npz", content).json() for _ in range(2))
    assert first["id"] != second["id"] and first["sha256"] == second["sha256"]
    matching = [p for p in stored_files() if p.name == first["sha256"]]
    assert len(matching) == 1
    # Deleting one keeps the bytes the other still needs; deleting both removes them.
    assert client.delete(f"/v1/datasets/{first['id']}").status_code == 204
    assert matching[0].exists()
    assert client.delete(f"/v1/datasets/{second['id']}").status_code == 204
    assert not matching[0].exists()
    assert_problem(client.get(f"/v1/datasets/{second['id']}"), 404)


def _npz(**arrays) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _png(size: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (size, size)).save(out, "PNG")
    return out.getvalue()


NAN_X = np.zeros((20, 4), np.float32)
NAN_X[7, 2] = np.nan
BAD_CSV = files.cancer_table(30)
BAD_CSV.loc[2, "mean area"] = None


@pytest.mark.parametrize(
    ("filename", "content", "where"),
    [
        ("empty.csv", b"", "file: the file is empty"),
        ("notes.txt", b"hello", "unsupported file type"),
        ("nan.npz", _npz(x=NAN_X, y=np.arange(20) % 2), "array 'x': NaN at example 7"),
        ("shape.npz", _npz(x=np.zeros((4, 2, 2, 2, 2)), y=np.arange(4) % 2), "array 'x'"),
        ("pickle.npz", _npz(x=np.zeros((4, 2)), y=np.array([{}, 1, 2, 3], object)), "unpickled"),
        ("one.npz", _npz(x=np.zeros((4, 2)), y=np.zeros(4)), "only one class"),
        ("nolabel.csv", files.cancer_table(30).drop(columns="label").to_csv().encode(), "label"),
        ("missing.csv", BAD_CSV.to_csv(index=False).encode(), "row 3, column 'mean area'"),
        ("broken.jsonl", b'{"text": "a", "label": "x"}\n{"text": ', "line 2"),
        ("unknown.jsonl", b'{"text": "a", "label": "x", "extra": 1}\n', "field 'extra'"),
        ("escape.zip", _zip({"a/1.png": _png(8), "../b/2.png": _png(8)}), "'../b/2.png'"),
        ("garbage.zip", _zip({"a/1.png": _png(8), "b/2.png": b"not an image"}), "b/2.png"),
        ("sizes.zip", _zip({"a/1.png": _png(8), "b/2.png": _png(9)}), "b/2.png"),
        ("notzip.zip", b"PK not really", "file: not a valid zip file"),
    ],
)
def test_bad_files_are_422_naming_where_and_leave_nothing_behind(client, filename, content, where):
    before_rows, before_files = dataset_count(client), stored_files()
    before_scratch = set(Path(tempfile.gettempdir()).glob("tunery-upload-*"))
    body = assert_problem(upload(client, filename, content), 422)
    assert body["errors"][0]["field"] == "file"
    assert where in body["errors"][0]["message"], body
    assert dataset_count(client) == before_rows
    assert stored_files() == before_files
    assert set(Path(tempfile.gettempdir()).glob("tunery-upload-*")) == before_scratch


def test_form_fields_are_checked_by_name(client):
    response = client.post(
        "/v1/datasets", files={"file": ("d.npz", files.digits_npz(50))}, data={"name": "d"}
    )
    assert assert_problem(response, 422)["errors"][0]["field"] == "task"
    response = upload(client, "d.npz", files.digits_npz(50), task="segmentation")
    assert assert_problem(response, 422)["errors"][0]["field"] == "task"
    response = upload(client, "d.npz", files.digits_npz(50), task="token_classification")
    (error,) = assert_problem(response, 422)["errors"]
    assert error["field"] == "file" and "comes as a .jsonl file" in error["message"]


def test_a_job_on_an_upload_is_checked_at_submission_and_pins_the_dataset(client):
    images = upload(client, "digits.npz", files.digits_npz(200)).json()
    corpus = upload(client, "corpus.jsonl", files.topics_jsonl(60, False), "pretraining").json()
    spec = {
        "kind": "finetune",
        "model": {"architecture": "cnn", "params": {"channels": [8], "hidden": 16}},
        "data": {"train": images["id"]},
    }
    cases = [
        ({**spec, "data": {"train": "ds_" + "0" * 32}}, "data.train", "unknown dataset"),
        ({**spec, "data": {"train": corpus["id"]}}, "data.train", "has no labels"),
        ({**spec, "model": {"architecture": "gru"}}, "model.architecture", "image"),
    ]
    for body, field, phrase in cases:
        error = assert_problem(client.post("/v1/jobs", json=body), 422)["errors"][0]
        assert error["field"] == field and phrase in error["message"], error
    job = client.post("/v1/jobs", json=spec)
    assert job.status_code == 201, job.text
    conflict = assert_problem(client.delete(f"/v1/datasets/{images['id']}"), 409)
    assert job.json()["id"] in conflict["detail"]
    client.post(f"/v1/jobs/{job.json()['id']}/cancel")
    assert client.delete(f"/v1/datasets/{images['id']}").status_code == 204


def test_list_is_paginated_newest_first(client):
    ids = [upload(client, f"p{i}.npz", files.digits_npz(40 + i)).json()["id"] for i in range(3)]
    first = client.get("/v1/datasets", params={"limit": 2}).json()
    second = client.get("/v1/datasets", params={"limit": 2, "cursor": first["next_cursor"]})
    assert [d["id"] for d in first["data"]] == ids[::-1][:2]
    assert second.json()["data"][0]["id"] == ids[0]


def test_an_idempotency_key_makes_a_replayed_upload_return_the_first_dataset(client):
    key = {"Idempotency-Key": "upload-once"}
    content = files.digits_npz(90)

    def send():
        return client.post(
            "/v1/datasets",
            files={"file": ("once.npz", content)},
            data={"name": "once", "task": "classification"},
            headers=key,
        )

    first = send()
    assert first.status_code == 201, first.text
    count = dataset_count(client)
    assert send().json() == first.json()
    assert dataset_count(client) == count
