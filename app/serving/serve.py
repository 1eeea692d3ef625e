"""Serve this model with onnxruntime alone: `python serve.py [--port 8080]`.

POST /predict with {"inputs": [...]} (raw values as in the training data, strings for a
text model, clips as lists of samples at the card's `log_mel.sample_rate` for an audio model)
answers {"predictions": [...], "probabilities": [[...]], "labels": [...]} (a
regressor: {"values": [[...]], "targets": [...]}; a multilabel model: {"label_sets": [[...]],
"probabilities", "labels", "thresholds"}, a label where its probability reaches its threshold;
a token tagger, given texts or lists of words: {"tags": [[...]], "words": [[...]], "labels"}).
Needs `pip install onnxruntime numpy` (and `tokenizers` for text models); nothing from tunery.
"""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import onnxruntime

HERE = Path(__file__).parent
CARD = json.loads((HERE / "model_card.json").read_text())
SESSION = onnxruntime.InferenceSession(str(HERE / "model.onnx"))


def _token_ids(texts: list[str]) -> np.ndarray:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(CARD["tokenizer"])
    length = CARD["input_shape"][0]
    ids = np.zeros((len(texts), length), dtype=np.int64)  # id 0 pads
    for row, encoding in zip(ids, tokenizer.encode_batch(texts), strict=True):
        row[: min(length, len(encoding.ids))] = encoding.ids[:length]
    return ids


def _tagged(inputs: list) -> dict:
    """A token tagger's answer: each text (split at whitespace) or list of words, a tag per
    word, read at the word's first piece."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(CARD["tokenizer"])
    length, labels = CARD["input_shape"][0], CARD["labels"]
    words = [item.split() if isinstance(item, str) else list(item) for item in inputs]
    encodings = tokenizer.encode_batch(words, is_pretokenized=True)
    ids = np.zeros((len(words), length), dtype=np.int64)  # id 0 pads
    for row, encoding in zip(ids, encodings, strict=True):
        row[: min(length, len(encoding.ids))] = encoding.ids[:length]
    probabilities, _embeddings = SESSION.run(None, {"inputs": ids})
    tags = []
    for i, (encoding, row) in enumerate(zip(encodings, probabilities, strict=True)):
        firsts = [p for p, w in enumerate(encoding.word_ids[:length])
                  if w is not None and (p == 0 or encoding.word_ids[p - 1] != w)]  # fmt: skip
        if len(firsts) < len(words[i]):
            raise ValueError(f"inputs.{i}: more words than the model's {length} tokens")
        tags.append([labels[int(row[p].argmax())] for p in firsts])
    return {"tags": tags, "words": words, "labels": labels}


def _clips(inputs: list) -> np.ndarray:
    """Clips of samples, zero-padded at their end to the model's length (as tunery's predict)."""
    length = CARD["input_shape"][0]
    batch = np.zeros((len(inputs), length), dtype=np.float32)
    for i, clip in enumerate(inputs):
        samples = np.asarray(clip, dtype=np.float32).ravel()
        if len(samples) > length:
            raise ValueError(f"inputs.{i}: {len(samples)} samples; at most {length}")
        batch[i, : len(samples)] = samples
    return batch


def predict(inputs: list) -> dict:
    if CARD["task"] == "token_classification":
        return _tagged(inputs)
    if CARD.get("tokenizer") is not None:
        batch = _token_ids(inputs)
    elif CARD.get("log_mel") is not None:
        batch = _clips(inputs)
    else:
        batch = np.asarray(inputs, dtype=np.float32)
    outputs, _embeddings = SESSION.run(None, {"inputs": batch})
    if CARD["task"] in ("regression", "forecasting"):  # forecasting: (N, horizon, series)
        return {"values": outputs.tolist(), "targets": CARD["targets"]}
    probabilities, labels = outputs, CARD["labels"]
    if CARD["task"] == "multilabel":
        chosen = probabilities >= np.asarray(CARD["thresholds"])
        return {
            "label_sets": [
                [label for label, on in zip(labels, row, strict=True) if on] for row in chosen
            ],
            "probabilities": probabilities.tolist(),
            "labels": labels,
            "thresholds": CARD["thresholds"],
        }
    return {
        "predictions": [labels[i] for i in probabilities.argmax(axis=1)],
        "probabilities": probabilities.tolist(),
        "labels": labels,
    }


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        if self.path != "/predict":
            self.send_error(404)
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answer, status = predict(body["inputs"]), 200
        except (ValueError, KeyError, TypeError) as error:
            answer, status = {"detail": str(error)}, 422
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
