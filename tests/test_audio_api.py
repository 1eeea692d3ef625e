"""Audio through the service (embedded SQLite stack, a real worker): a zip of WAV clips in class
folders uploaded at another rate than the service's, a CNN trained on it, and its predict taking
clips as samples or as base64 files, with a 422 naming the clip it cannot take."""

import base64
import io
import uuid
import zipfile

import numpy as np
import pytest
import soundfile

from tests.stack import start_stack
from tests.test_e2e import finished, wait_for
from tests.test_heads_api import upload
from trainer.spoken_digits import WORDS, spoken_digits
from trainer.waveforms import SAMPLE_RATE, resample

pytestmark = pytest.mark.e2e

FILE_RATE = 8000  # the uploaded files' rate: the service reads them at SAMPLE_RATE


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    urls = (f"sqlite:///{root}/tunery.db", f"sqla+sqlite:///{root}/broker.db")
    stack = start_stack(root, *urls, queue=f"tunery-audio-{uuid.uuid4().hex[:8]}")
    try:
        with stack.client() as client:
            yield client
    finally:
        stack.stop()


def wav(samples: np.ndarray, rate: int = FILE_RATE) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, resample(samples, SAMPLE_RATE, rate), rate, format="WAV")
    return buffer.getvalue()


def test_an_audio_zip_uploads_trains_and_predicts_from_waveforms(client, tmp_path):
    clips = spoken_digits()
    digits = (0, 1, 7)  # every voice and style of three words
    chosen = np.flatnonzero(np.isin(clips["digit"], digits))
    path = tmp_path / "words.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in chosen:
            archive.writestr(f"{WORDS[clips['digit'][i]]}/{i}.wav", wav(clips["x"][i]))
    uploaded = upload(client, path, task="classification")
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert dataset["modality"] == "audio" and dataset["labels"] == ["one", "seven", "zero"]
    assert dataset["input_shape"] == [SAMPLE_RATE]  # the longest clip, resampled to 16 kHz
    spec = {
        "kind": "finetune",
        "model": {
            "architecture": "cnn",
            "params": {"channels": [8, 16], "hidden": 32, "batch_norm": True},
        },
        "data": {"train": dataset["id"]},
        "hyperparameters": {"epochs": 6, "batch_size": 16, "learning_rate": 3e-3},
    }
    submitted = client.post("/v1/jobs", json=spec)
    assert submitted.status_code == 201, submitted.text
    job = wait_for(client, submitted.json()["id"], finished)
    assert job["status"] == "succeeded", job
    assert job["metrics"]["test_accuracy"] > 0.7, job["metrics"]
    model_id = job["result_model_id"]

    seven = clips["x"][np.flatnonzero(clips["digit"] == 7)[0]]
    short = seven[: np.flatnonzero(seven)[-1] + 1]  # a clip of its own length, padded by predict
    as_file = base64.b64encode(wav(seven, 22050)).decode()
    inputs = [short.tolist(), as_file]
    answer = client.post(f"/v1/models/{model_id}/predict", json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["labels"] == ["one", "seven", "zero"] and body["predictions"] == ["seven"] * 2

    too_long = np.zeros(SAMPLE_RATE + 1).tolist()
    refused = client.post(
        f"/v1/models/{model_id}/predict", json={"inputs": [short.tolist(), too_long]}
    )
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["field"] == "inputs.1" and "at most 16000" in error["message"]
    refused = client.post(f"/v1/models/{model_id}/predict", json={"inputs": ["bm90IGF1ZGlv"]})
    (error,) = refused.json()["errors"]
    assert error["field"] == "inputs.0" and "WAV or FLAC" in error["message"]
