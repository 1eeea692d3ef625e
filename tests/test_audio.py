"""Audio in the training core, without the service: the log-mel front end inside the model, the
spoken digits synthesised by espeak-ng and their speaker shift, a CNN classifying them from
raw waveforms through save, reload and ONNX, pretraining and adaptation on them, and the spec
checks that say which methods read audio."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from tests.test_methods import run
from trainer.architectures.log_mel import LogMel, mel_filterbank
from trainer.artifact import load_predictor, save_model
from trainer.card import LogMelSettings
from trainer.data import load_dataset
from trainer.export import export_onnx
from trainer.run import LoadedModel
from trainer.spec import JobSpec
from trainer.spoken_digits import FEMALE_VOICES, MALE_VOICES, spoken_digits
from trainer.validation import check_spec
from trainer.waveforms import SAMPLE_RATE

SERVE_PY = Path(__file__).parents[1] / "app" / "serving" / "serve.py"
SERVE = "import json, sys; import serve; print(json.dumps(serve.predict(json.load(sys.stdin))))"
CNN = {"architecture": "cnn", "params": {"channels": [8, 16], "hidden": 32, "batch_norm": True}}
FAST = {"epochs": 2, "batch_size": 32, "learning_rate": 3e-3, "seed": 0}
SHIFT = {"source": "builtin:spoken-digits-male", "target": "builtin:spoken-digits-female"}


def supervised_spec(dataset: str = "builtin:spoken-digits", epochs: int = 5) -> dict:
    return {
        "kind": "finetune",
        "model": CNN,
        "data": {"train": dataset},
        "hyperparameters": FAST | {"epochs": epochs},
    }


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    result, _events = run(supervised_spec())
    path = tmp_path_factory.mktemp("audio") / "model.safetensors"
    save_model(result.model, result.card, path)
    return result, path


def tone(hz: float, seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return torch.sin(2 * math.pi * hz * t)


def test_the_front_end_puts_a_tone_in_its_mel_band():
    settings = LogMelSettings()
    filters = mel_filterbank(settings)  # (bins, mels), each filter of unit area in Hz
    hz_per_bin = SAMPLE_RATE / settings.n_fft
    assert filters.shape == (settings.n_fft // 2 + 1, 40)
    np.testing.assert_allclose(filters.sum(0) * hz_per_bin, 1.0, rtol=0.1)  # Slaney: unit area
    spectrogram = LogMel(settings)(torch.stack([tone(300.0), tone(3000.0)]))
    assert spectrogram.shape == (2, 1, 40, SAMPLE_RATE // 2 // 160 + 1)
    loudest = spectrogram.mean(3).squeeze(1).argmax(1)  # the band of each tone
    peaks = torch.from_numpy(filters).argmax(0) * hz_per_bin  # each band's centre, Hz
    assert abs(peaks[loudest[0]] - 300) < 60 and abs(peaks[loudest[1]] - 3000) < 250
    silence = LogMel(settings)(torch.zeros(1, 1600))
    assert torch.isfinite(silence).all()


def test_spoken_digits_are_a_fixed_speaker_shift_of_the_same_words():
    clips = spoken_digits()
    assert clips["x"].shape == (360, SAMPLE_RATE) and clips["x"].dtype == np.float32
    assert np.abs(clips["x"]).max() <= 1.0 and np.bincount(clips["digit"]).tolist() == [36] * 10
    male, female = load_dataset(SHIFT["source"]), load_dataset(SHIFT["target"])
    assert male.modality == female.modality == "audio"
    assert male.input_shape == female.input_shape == (SAMPLE_RATE,)
    assert set(MALE_VOICES).isdisjoint(FEMALE_VOICES)
    assert [len(male.splits[s]) for s in ("train", "validation", "test")] == [126, 18, 36]
    # The same words in both domains: the test splits' digits are balanced alike.
    assert torch.equal(
        torch.bincount(male.splits["test"].y), torch.bincount(female.splits["test"].y)
    )


def test_spoken_digits_without_espeak_say_how_to_install_it(monkeypatch, tmp_path):
    from trainer.spoken_digits import _espeak

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"espeak-ng.*make install"):
        _espeak()


def test_a_cnn_classifies_spoken_digits_from_their_waveforms(classifier):
    result, _path = classifier
    card = result.card
    assert card.metrics["test_accuracy"] > 0.8, card.metrics
    assert card.modality == "audio" and card.input_shape == [SAMPLE_RATE]
    assert card.log_mel == LogMelSettings(sample_rate=SAMPLE_RATE)
    assert len(card.normalization.mean) == 1  # of the spectrograms, not of the waveforms


def test_an_audio_classifier_reloads_and_exports_taking_raw_waveforms(classifier, tmp_path):
    import onnxruntime

    result, path = classifier
    network, card = load_predictor(path)
    assert card.log_mel == result.card.log_mel
    test = load_dataset("builtin:spoken-digits").splits["test"]
    x = test.x[:16]
    with torch.no_grad():
        expected = torch.softmax(result.model.eval()(x), 1)
        assert torch.allclose(torch.softmax(network(x), 1), expected, atol=1e-5)
    onnx_path = tmp_path / "model.onnx"
    export_onnx(path, onnx_path)
    session = onnxruntime.InferenceSession(str(onnx_path))
    assert session.get_inputs()[0].shape[1:] == [SAMPLE_RATE]  # waveforms in
    probabilities, _features = session.run(None, {"inputs": x.numpy()})
    np.testing.assert_allclose(probabilities, expected.numpy(), atol=1e-4)
    assert (probabilities.argmax(1) == test.y[:16].numpy()).mean() > 0.7
    # The archive's serve.py, onnxruntime alone, pads a clip of its own length as predict does.
    shutil.copy(SERVE_PY, tmp_path)
    (tmp_path / "model_card.json").write_text(card.model_dump_json())
    clip = x[0, : int(torch.nonzero(x[0])[-1]) + 1].tolist()
    served = subprocess.run(
        [sys.executable, "-c", SERVE], input=json.dumps([clip]), cwd=tmp_path,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(served.stdout)["predictions"] == [card.labels[probabilities[0].argmax()]]


@pytest.mark.parametrize("method", ["dann", "coral", "mmd"])
def test_adaptation_reads_the_speaker_shift(method):
    data = {domain: {"dataset": name, "per_class": 8} for domain, name in SHIFT.items()}
    spec = {"kind": "adapt", "model": CNN, "method": {"name": method, "params": {"weight": 0.1}},
            "data": data, "hyperparameters": FAST}  # fmt: skip
    assert check_spec(TypeAdapter(JobSpec).validate_python(spec)) == []
    result, _events = run(spec)
    metrics = result.card.metrics
    assert metrics["source_test_accuracy"] > 0.3  # it learned the labelled male voices
    assert 0 <= metrics["test_accuracy"] <= 1 and result.card.log_mel is not None


@pytest.mark.parametrize("method", ["contrastive", "autoencoder"])
def test_pretraining_on_audio_fine_tunes_into_a_classifier(method):
    pretrain = {"kind": "pretrain", "model": CNN, "method": {"name": method},
                "data": {"train": SHIFT["source"]},
                "hyperparameters": FAST | {"epochs": 1}}  # fmt: skip
    assert check_spec(TypeAdapter(JobSpec).validate_python(pretrain)) == []
    base, events = run(pretrain)
    losses = [e["value"] for e in events if e["type"] == "metric" and e["name"] == "loss"]
    assert losses and all(math.isfinite(v) for v in losses)
    assert base.card.log_mel is not None
    spec = {k: v for k, v in supervised_spec(SHIFT["source"], epochs=1).items() if k != "model"}
    tuned, _ = run(
        spec | {"base_model_id": "model_base"}, LoadedModel(base.model.state_dict(), base.card)
    )
    assert tuned.card.log_mel == base.card.log_mel and tuned.card.task == "classification"


def test_methods_that_read_no_audio_are_refused_naming_the_data():
    spec = {"kind": "adapt", "model": CNN, "method": {"name": "self_training"},
            "data": SHIFT, "hyperparameters": FAST}  # fmt: skip
    issues = check_spec(TypeAdapter(JobSpec).validate_python(spec))
    assert any(i.field == "data.source" and "audio" in i.message for i in issues), issues
    mlp = supervised_spec() | {"model": {"architecture": "mlp"}}
    issues = check_spec(TypeAdapter(JobSpec).validate_python(mlp))
    assert any(i.field == "model.architecture" and "audio" in i.message for i in issues), issues


def test_the_telephone_line_keeps_the_voice_band_and_drops_the_rest():
    from trainer.spoken_digits import telephone
    from trainer.waveforms import SAMPLE_RATE

    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tones = np.stack([0.5 * np.sin(2 * np.pi * hz * t) for hz in (100, 1000, 6000)])
    line = telephone(tones)
    assert line.dtype == np.float32 and np.array_equal(line, telephone(tones))  # its seed
    power = (line**2).mean(axis=1) / (tones**2).mean(axis=1)
    assert power[1] > 0.8 and power[0] < 0.05 and power[2] < 0.05, power
