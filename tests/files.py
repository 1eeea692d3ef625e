"""Small valid dataset files in every upload format, built from scikit-learn's digits."""

import io
import json
import zipfile

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits


def digits_npz(count: int = 300) -> bytes:
    digits = load_digits()
    out = io.BytesIO()
    np.savez(out, x=digits.images[:count].astype(np.float32), y=digits.target[:count])
    return out.getvalue()


def cancer_table(count: int = 200) -> pd.DataFrame:
    """Numeric features, one categorical column and a string label."""
    data = load_breast_cancer(as_frame=True)
    table = data.frame.iloc[:count, :6].copy()
    table["size"] = np.where(table["mean radius"] > 14, "large", "small")
    table["label"] = np.where(data.target[:count] == 1, "benign", "malignant")
    return table


def cancer_csv(count: int = 200) -> bytes:
    return cancer_table(count).to_csv(index=False).encode()


def cancer_parquet(count: int = 200) -> bytes:
    out = io.BytesIO()
    cancer_table(count).to_parquet(out, index=False)
    return out.getvalue()


TOPICS = {
    "sport": "the team won the match and the striker scored a late goal in the league",
    "tech": "the new phone runs a faster chip and the software update fixes the battery",
}


def topics_jsonl(count: int = 120, labelled: bool = True) -> bytes:
    lines = []
    for i in range(count):
        label = list(TOPICS)[i % 2]
        words = TOPICS[label].split()
        text = " ".join(words[i % 5 :] + words[: i % 5])
        lines.append(json.dumps({"text": text, "label": label} if labelled else {"text": text}))
    return "\n".join(lines).encode()


def digits_zip(count: int = 200, labelled: bool = True) -> bytes:
    digits = load_digits()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for i in range(count):
            png = io.BytesIO()
            Image.fromarray((digits.images[i] * 15).astype(np.uint8), "L").save(png, "PNG")
            folder = f"{digits.target[i]}/" if labelled else ""
            archive.writestr(f"{folder}{i:04d}.png", png.getvalue())
    return out.getvalue()
