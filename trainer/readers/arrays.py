"""npz files: arrays x (inputs), y (labels; regression: numeric targets, one column each,
named `y` or `y0`, `y1`, ...) and split, read without ever unpickling."""

import math
import zipfile
from pathlib import Path

import numpy as np

from trainer.readers.common import (
    DatasetError,
    ParsedDataset,
    ReadLimits,
    check_archive,
    check_split,
    encode_labels,
    json_safe,
    png_base64,
)

NPZ_ARRAYS = ("x", "y", "split")


def read(path: Path, labelled: bool, limits: ReadLimits, task: str) -> ParsedDataset:
    with _open_npz(path, limits) as npz:
        if "x" not in npz.files:
            raise DatasetError("array 'x'", "not found; an npz dataset needs its inputs in `x`")
        modality, x = _npz_inputs(_npz_array(npz, "x"))
        x = _as_float32(x)
        regression = labelled and task == "regression"
        if regression:
            y, labels = _npz_targets(npz, len(x)), ()
        else:
            y, labels = _npz_labels(npz, len(x)) if labelled else (None, ())
        split = _npz_split(npz, len(x))
    names = tuple(f"x{i}" for i in range(x.shape[1])) if modality == "tabular" else None
    if not regression:
        return ParsedDataset(modality, x, None, y, labels, split, names)
    targets = ("y",) if y.shape[1] == 1 else tuple(f"y{i}" for i in range(y.shape[1]))
    return ParsedDataset(modality, x, None, y, labels, split, names, targets=targets, task=task)


def preview(path: Path, count: int, limits: ReadLimits) -> dict:
    with _open_npz(path, limits) as npz:
        if "x" not in npz.files:
            raise DatasetError("array 'x'", "not found; an npz dataset needs its inputs in `x`")
        modality, x = _npz_inputs(_npz_array(npz, "x"))
        y = _decoded(_npz_array(npz, "y")) if "y" in npz.files else None
    x = x[:count]
    label = [json_safe(y[i]) if y is not None and i < len(y) else None for i in range(len(x))]
    if modality == "tabular":
        rows = [{"x": json_safe(row)} for row in x]
        if y is not None:
            rows = [{**row, "y": label[i]} for i, row in enumerate(rows)]
        return {"rows": rows}
    images = [
        {
            "label": None if label[i] is None else str(label[i]),
            "png_base64": png_base64(_display(image)),
        }
        for i, image in enumerate(x)
    ]
    return {"images": images}


def _open_npz(path: Path, limits: ReadLimits) -> np.lib.npyio.NpzFile:
    with open(path, "rb") as file:
        magic = file.read(4)
    # np.load would take any other file for a pickle (refused, but with a misleading message).
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        reason = "not a zip archive of arrays (save it with np.savez)"
        raise DatasetError("file", f"not a valid npz file: {reason}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise DatasetError("file", f"not a valid npz file: {error}") from None
    try:
        # No ratio check: sparse arrays compress far beyond 100:1 and are fine. The declared
        # sizes cap what can be decompressed, as zipfile never reads past them.
        infos = check_archive(npz.zip, limits, check_ratio=False)
        if "x" in npz.files:
            _check_decoded(npz, sum(info.file_size for info in infos), limits)
    except DatasetError:
        npz.close()
        raise
    unknown = [name for name in npz.files if name not in NPZ_ARRAYS]
    if unknown:
        npz.close()
        raise DatasetError(f"array '{unknown[0]}'", "unknown array; expected x, y, split")
    return npz


def _check_decoded(npz: np.lib.npyio.NpzFile, stored: int, limits: ReadLimits) -> None:
    """The arrays as stored plus x as float32 (the copy training reads) fit the budget. The
    sizes come from the zip directory and x's header: nothing is decompressed before."""
    try:
        with npz.zip.open("x.npy") as member:
            version = np.lib.format.read_magic(member)
            header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape = header(member)[0]
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as error:
        raise DatasetError("array 'x'", f"cannot be read: {error}") from None
    decoded = stored + math.prod(shape) * np.dtype(np.float32).itemsize
    budget = limits.max_uncompressed_bytes
    if decoded > budget:
        message = f"the arrays would take {decoded} bytes in memory; at most {budget} are allowed"
        raise DatasetError("file", message)


def _npz_array(npz: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    where = f"array '{name}'"
    try:
        return npz[name]
    except ValueError as error:
        if "allow_pickle" in str(error):
            message = (
                "holds Python objects, which are never unpickled; save numeric or string arrays"
            )
            raise DatasetError(where, message) from None
        raise DatasetError(where, f"cannot be read: {error}") from None
    except (zipfile.BadZipFile, OSError, EOFError, MemoryError) as error:
        raise DatasetError(where, f"cannot be read: {error}") from None


def _npz_inputs(x: np.ndarray) -> tuple[str, np.ndarray]:
    """The modality and x as (N, F) or channels-first (N, C, H, W), its values unchanged."""
    where, shape = "array 'x'", x.shape
    if x.dtype.kind not in "biuf":
        raise DatasetError(where, f"holds {x.dtype} values; inputs must be numbers")
    if x.ndim >= 1 and shape[0] == 0:
        raise DatasetError(where, "has no examples")
    if 0 not in shape[1:]:
        if x.ndim == 2:
            return "tabular", x
        if x.ndim == 3:
            return "image", x[:, None]
        if x.ndim == 4 and shape[1] in (1, 3, 4):
            return "image", x
        if x.ndim == 4 and shape[3] in (1, 3, 4) and shape[1] > 4:
            return "image", x.transpose(0, 3, 1, 2)
    message = f"shape {shape} is not (N, features), (N, H, W), (N, C, H, W) or (N, H, W, C)"
    raise DatasetError(where, message)


def _as_float32(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # values too large for float32 become inf, reported next
        x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        what = "NaN" if np.isnan(x[i]).any() else "infinity"
        raise DatasetError("array 'x'", f"{what} at example {i}")
    return x


def _npz_labels(npz: np.lib.npyio.NpzFile, count: int) -> tuple[np.ndarray, tuple[str, ...]]:
    where = "array 'y'"
    if "y" not in npz.files:
        raise DatasetError(where, "not found; a labelled dataset needs its labels in `y`")
    y = _npz_array(npz, "y")
    if y.ndim != 1:
        raise DatasetError(where, f"has shape {y.shape}; labels must be 1-D, one per example")
    if y.dtype.kind not in "iufUS":
        raise DatasetError(where, f"holds {y.dtype} values; labels must be integers or strings")
    if len(y) != count:
        raise DatasetError(where, f"has {len(y)} labels for {count} examples")
    if y.dtype.kind == "f":
        # Class indices are often saved as floats; whole numbers are taken as the integers.
        fractional = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if fractional.size:
            i = int(fractional[0])
            message = f"{y[i]} at example {i} is not a whole number; labels must be integers"
            raise DatasetError(where, message + " or strings")
        y = y.astype(np.int64)
    return encode_labels(_decoded(y), where)


def _npz_targets(npz: np.lib.npyio.NpzFile, count: int) -> np.ndarray:
    """A regression dataset's targets: float32 (N, T) from `y` of shape (N,) or (N, T)."""
    where = "array 'y'"
    if "y" not in npz.files:
        raise DatasetError(where, "not found; a regression dataset needs its targets in `y`")
    y = _npz_array(npz, "y")
    if y.dtype.kind not in "iuf":
        raise DatasetError(where, f"holds {y.dtype} values; regression targets are numbers")
    if y.ndim not in (1, 2) or len(y) != count:
        message = f"has shape {y.shape}; targets are ({count},) or ({count}, targets)"
        raise DatasetError(where, message)
    y = y.astype(np.float32).reshape(count, -1)
    bad = np.argwhere(~np.isfinite(y))
    if bad.size:
        i, j = (int(k) for k in bad[0])
        raise DatasetError(where, f"target {j} of example {i} is {y[i, j]}, not a number")
    return y


def _npz_split(npz: np.lib.npyio.NpzFile, count: int) -> np.ndarray | None:
    if "split" not in npz.files:
        return None
    where = "array 'split'"
    split = _npz_array(npz, "split")
    if split.ndim != 1 or split.dtype.kind not in "US":
        raise DatasetError(
            where, f"must be a 1-D array of strings, not {split.dtype} {split.shape}"
        )
    if len(split) != count:
        raise DatasetError(where, f"has {len(split)} values for {count} examples")
    return check_split(_decoded(split), lambda _i: where, numbered=True)


def _decoded(strings: np.ndarray) -> np.ndarray:
    return np.char.decode(strings, "utf-8") if strings.dtype.kind == "S" else strings


def _display(image: np.ndarray) -> np.ndarray:
    """A (C, H, W) image of any value range as (H, W[, C]) uint8, stretched to 0-255."""
    image = np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) * (255.0 / (high - low)) if high > low else np.zeros_like(image)
    pixels = scaled.round().astype(np.uint8).transpose(1, 2, 0)
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
