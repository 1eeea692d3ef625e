"""ONNX export of a task head's model: raw inputs in (the normalisation is a layer of the
graph), what predict computes (a classifier's or multilabel model's probabilities, a
regressor's values) and embeddings out, any batch size.

Text models take token ids (int64, `(batch, max_length)`): the tokenizer is not an ONNX
operator; it is in the model card (`tokenizer`, a `tokenizers` JSON) for the caller to apply.
"""

import contextlib
import io
import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from trainer.architectures import Network
from trainer.architectures.lora import peft_model
from trainer.artifact import adapted_backbone, load_predictor, load_weights
from trainer.card import TrunkCard
from trainer.chat_format import ChatTokenizer
from trainer.heads import HEADS

OPSET = 18
INPUT, PROBABILITIES, EMBEDDINGS = "inputs", "probabilities", "embeddings"
# a regressor's predictions, in its targets' units; a forecaster's, (batch, horizon, series)
VALUES = "values"
# by task, beside EMBEDDINGS; a multilabel model's thresholds are in its card
OUTPUTS = {
    "classification": PROBABILITIES,
    "regression": VALUES,
    "multilabel": PROBABILITIES,
    "forecasting": VALUES,
    "token_classification": PROBABILITIES,  # (batch, tokens, tags)
}


class _Served(nn.Module):
    """What `predict` computes, as one graph: a classifier's probabilities or a regressor's
    values, and the features."""

    def __init__(self, network: Network, task: str) -> None:
        super().__init__()
        self.network, self.serve = network, HEADS[task].serve

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, features = self.network.outputs_and_features(inputs)
        return self.serve(outputs), features


def example_input(card: TrunkCard, batch: int = 2) -> torch.Tensor:
    shape = (batch, *card.input_shape)
    if card.tokenizer:
        return torch.ones(shape, dtype=torch.long)
    return torch.zeros(shape, dtype=torch.float32)


def export_onnx(model_path: Path, onnx_path: Path) -> None:
    """Write the classifier or regressor stored at `model_path` as ONNX (opset 18) to
    `onnx_path`."""
    network, card = load_predictor(model_path)
    batch = torch.export.Dim("batch", min=1)
    # The exporter reports progress on stdout and warns about optional packages; neither is
    # ours to show.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _Served(network, card.task).eval(),
            (example_input(card),),
            input_names=[INPUT],
            output_names=[OUTPUTS[card.task], EMBEDDINGS],
            dynamic_shapes={"inputs": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    program.save(str(onnx_path))


# Where each Hugging Face architecture keeps the model's weights in a tunery model's state.
HF_PREFIXES = {"hf_encoder": "backbone.encoder.", "hf_causal_lm": "backbone.lm."}


def export_hf_directory(model_path: Path, out: Path) -> None:
    """A Hugging Face model (`hf_encoder`, `hf_causal_lm`) as a Hugging Face directory:
    `config.json`, `model.safetensors` and the tokenizer load with `AutoModel` (an encoder:
    features are the mean of the last hidden states over real tokens) or
    `AutoModelForCausalLM` (with the chat template it was trained with), and
    `AutoTokenizer.from_pretrained`. A classifier's head is `head.safetensors` (`weight`,
    `bias`), its labels in `model_card.json`. A model that kept its LoRA adapter apart also
    gets `adapter/` in peft's format, to apply to the base model."""
    loaded = load_weights(model_path)
    card = loaded.card
    prefix = HF_PREFIXES.get(card.architecture)
    if prefix is None:
        raise ValueError(f"a {card.architecture} model is not a Hugging Face model")
    out.mkdir(parents=True, exist_ok=True)
    weights = {k.removeprefix(prefix): v for k, v in loaded.state.items() if k.startswith(prefix)}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    head = {k.removeprefix("head."): v for k, v in loaded.state.items() if k.startswith("head.")}
    if head:
        save_file(head, str(out / "head.safetensors"))
    (out / "config.json").write_text(json.dumps(card.params["config"], indent=2))
    if card.architecture == "hf_causal_lm":
        ChatTokenizer(card).save(out)  # with its special tokens and chat template
    else:
        (out / "tokenizer.json").write_text(card.tokenizer)
    (out / "model_card.json").write_text(card.model_dump_json(indent=2))
    # Also the adapter alone, for peft: PeftModel.from_pretrained(base, dir).
    if card.adapter is not None:
        adapted = adapted_backbone(card, load_file(str(model_path)))
        # Embedding layers are not adapted; "auto" would ask the hub whether they changed.
        peft_model(adapted).save_pretrained(str(out / "adapter"), save_embedding_layers=False)
