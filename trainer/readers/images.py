"""zip archives of PNG or JPEG images: one folder per class, or a flat list when unlabelled, or
images anywhere in the archive listed by a table at its root, `labels.csv` (a multilabel
dataset's: columns `file` and `labels`; `trainer.readers.archives`). The archive is checked from
its central directory before anything is decompressed, and each image's size before its pixels
are decoded."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from trainer.readers.archives import (
    MemberKind,
    labelled_members,
    labels_of,
    open_zip,
    read_member,
)
from trainer.readers.common import (
    DatasetError,
    ParsedDataset,
    ReadLimits,
    member_where,
    png_base64,
)

IMAGES = MemberKind("images", "a PNG or JPEG file", (".png", ".jpg", ".jpeg"))
IMAGE_FORMATS = ("PNG", "JPEG")
# Modes Pillow gives greyscale PNG/JPEG files; "I" and "I;16*" hold 16-bit values.
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"})
WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def read(path: Path, labelled: bool, limits: ReadLimits, task: str) -> ParsedDataset:
    with open_zip(path) as archive:
        members, split = labelled_members(archive, limits, labelled, IMAGES, task)
        images, budget, decoded, size = [], limits.max_uncompressed_bytes, 0, None
        for info, _folder in members:
            where = member_where(info)
            data = read_member(archive, info, budget)
            budget -= len(data)
            with _open_image(data, where, limits) as image:
                size = size or image.size
                if image.size != size:
                    message = (
                        f"is {image.width}x{image.height} pixels; the first image is "
                        f"{size[0]}x{size[1]}; all images must have one size"
                    )
                    raise DatasetError(where, message)
                pixels = _pixels(image)
            # Small PNGs can decode to huge arrays, which the archive checks cannot see.
            decoded += pixels.size * 4  # as float32
            if decoded > limits.max_uncompressed_bytes:
                raise DatasetError("file", _too_large(decoded, limits))
            images.append(pixels)
    colour = any(pixels.ndim == 3 for pixels in images)
    width, height = size
    channels = 3 if colour else 1
    total = len(images) * channels * height * width * 4
    if total > limits.max_uncompressed_bytes:
        raise DatasetError("file", _too_large(total, limits))
    x = np.empty((len(images), channels, height, width), dtype=np.float32)
    for i, pixels in enumerate(images):
        x[i] = pixels.transpose(2, 0, 1) if pixels.ndim == 3 else pixels  # grey fills all three
    y, labels, task = labels_of(members, labelled, task)
    return ParsedDataset("image", x, None, y, labels, split, None, task=task)


def preview(path: Path, count: int, limits: ReadLimits) -> dict:
    shown = []
    with open_zip(path) as archive:
        budget = limits.max_uncompressed_bytes
        members, _split = labelled_members(archive, limits, False, IMAGES, "classification")
        for info, folder in members[:count]:
            data = read_member(archive, info, budget)
            budget -= len(data)
            with _open_image(data, member_where(info), limits) as image:
                shown.append({"label": folder, "png_base64": png_base64(_pixels(image))})
    return {"images": shown}


def _open_image(data: bytes, where: str, limits: ReadLimits) -> Image.Image:
    """The decoded image; its size is checked before any pixel is decoded."""
    try:
        # formats=: no other Pillow decoder ever sees the bytes.
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        if image.format not in IMAGE_FORMATS:
            raise DatasetError(where, "not a PNG or JPEG file")
        if image.width * image.height > limits.max_image_pixels:
            message = (
                f"is {image.width}x{image.height} pixels; "
                f"at most {limits.max_image_pixels} pixels are allowed"
            )
            raise DatasetError(where, message)
        image.load()
    except DatasetError:
        raise
    except Exception as error:  # Pillow raises many kinds of error on malformed input
        raise DatasetError(where, f"cannot decode the image: {error}") from None
    return image


def _pixels(image: Image.Image) -> np.ndarray:
    """(H, W) uint8 for a greyscale image, (H, W, 3) for a colour one."""
    if image.mode in WIDE_GREY_MODES:
        # Pillow's convert("L") clips 16-bit values at 255; scale them instead.
        return np.clip(np.asarray(image, dtype=np.float64) / 257, 0, 255).round().astype(np.uint8)
    return np.asarray(image.convert("L" if image.mode in GREY_MODES else "RGB"))


def _too_large(size: int, limits: ReadLimits) -> str:
    return (
        f"the images would decode to {size} bytes; "
        f"at most {limits.max_uncompressed_bytes} are allowed"
    )
