"""ONNX export of a classifier: raw inputs in (the normalisation is a layer of the graph),
probabilities and embeddings out, any batch size.

Text models take token ids (int64, `(batch, max_length)`): the tokenizer is not an ONNX
operator; it is in the model card (`tokenizer`, a `tokenizers` JSON) for the caller to apply.
"""

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from worker.core.architectures import Network
from worker.core.artifact import load_classifier

OPSET = 18
INPUT, PROBABILITIES, EMBEDDINGS = "inputs", "probabilities", "embeddings"


class _Served(nn.Module):
    """What `predict` computes, as one graph."""

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.network.features(inputs)
        return torch.softmax(self.network.head(features), dim=1), features


def example_input(card: dict, batch: int = 2) -> torch.Tensor:
    shape = (batch, *card["input_shape"])
    if card.get("tokenizer"):
        return torch.ones(shape, dtype=torch.long)
    return torch.zeros(shape, dtype=torch.float32)


def export_onnx(model_path: Path, onnx_path: Path) -> None:
    """Write the classifier stored at `model_path` as ONNX (opset 18) to `onnx_path`."""
    network, card = load_classifier(model_path)
    batch = torch.export.Dim("batch", min=1)
    # The exporter reports progress on stdout and warns about optional packages; neither is
    # ours to show.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _Served(network).eval(),
            (example_input(card),),
            input_names=[INPUT],
            output_names=[PROBABILITIES, EMBEDDINGS],
            dynamic_shapes={"inputs": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    program.save(str(onnx_path))
