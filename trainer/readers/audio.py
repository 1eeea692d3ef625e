"""zip archives of WAV or FLAC clips: one folder per class, or a flat list when unlabelled, or
clips anywhere in the archive listed by a table at its root, `labels.csv` (columns `file`, the
clip's path in the archive, `label` and optionally `split`; clips it does not list are not read).
Each clip is decoded by soundfile, its channels averaged to mono, resampled to the one rate of
every audio dataset (`trainer.waveforms.SAMPLE_RATE`) and zero-padded at its end to the
archive's longest clip: a model reads clips of one length."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from trainer.readers.archives import (
    MemberKind,
    class_members,
    member_names,
    open_zip,
    read_member,
)
from trainer.readers.common import (
    DatasetError,
    ParsedDataset,
    ReadLimits,
    check_split,
    encode_labels,
    member_where,
)
from trainer.waveforms import SAMPLE_RATE, AudioError, decode, padded, resample

CLIPS = MemberKind("clips", "a WAV or FLAC file", (".wav", ".flac"))
INDEX = "labels.csv"
Members = list[tuple[zipfile.ZipInfo, str | None]]  # each clip's member and its label


def holds_audio(path: Path, limits: ReadLimits) -> bool:
    """Whether a zip archive holds a clip: it is then read as clips, any other member refused
    by name (else it is read as images)."""
    with open_zip(path) as archive:
        names = member_names(archive, limits)
    return any(info.filename.lower().endswith(CLIPS.suffixes) for info in names)


def read(path: Path, labelled: bool, limits: ReadLimits) -> ParsedDataset:
    with open_zip(path) as archive:
        members, split = _members(archive, limits, labelled)
        clips, budget, decoded = [], limits.max_uncompressed_bytes, 0
        for info, _folder in members:
            clip = _clip(archive, info, budget)
            budget -= info.file_size
            # Compressed FLAC, or resampling up, can decode to far more than the archive holds.
            decoded += clip.nbytes
            if decoded > limits.max_uncompressed_bytes:
                message = (
                    f"the clips would decode to over {decoded} bytes at {SAMPLE_RATE} Hz; "
                    f"at most {limits.max_uncompressed_bytes} are allowed"
                )
                raise DatasetError("file", message)
            clips.append(clip)
    x = padded(clips, max(len(clip) for clip in clips))
    if labelled:
        y, labels = encode_labels([folder for _info, folder in members], "file")
    else:
        y, labels = None, ()
    return ParsedDataset("audio", x, None, y, labels, split, None)


def preview(path: Path, count: int, limits: ReadLimits) -> dict:
    """Each of the first `count` clips' label, file and duration."""
    rows = []
    with open_zip(path) as archive:
        budget = limits.max_uncompressed_bytes
        for info, folder in _members(archive, limits, False)[0][:count]:
            clip = _clip(archive, info, budget)
            budget -= info.file_size
            seconds = round(len(clip) / SAMPLE_RATE, 3)
            rows.append({"label": folder, "file": info.filename, "seconds": seconds})
    return {"rows": rows}


def _members(
    archive: zipfile.ZipFile, limits: ReadLimits, labelled: bool
) -> tuple[Members, np.ndarray | None]:
    """The clips in name order with their class folders, or as `labels.csv` lists them with
    their labels and splits."""
    infos = {info.filename: info for info in member_names(archive, limits)}
    if INDEX not in infos:
        return class_members(archive, limits, labelled, CLIPS), None
    data = read_member(archive, infos[INDEX], limits.max_uncompressed_bytes)
    try:
        table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError) as error:
        raise DatasetError(INDEX, f"cannot parse the table: {error}") from None
    needed = ("file", "label") if labelled else ("file",)
    missing = [column for column in needed if column not in table.columns]
    if missing:
        message = f"has no column '{missing[0]}': it names each clip's `file` and its `label`"
        raise DatasetError(INDEX, message)
    if table.empty:
        raise DatasetError(INDEX, "lists no clips")
    labels = table["label"] if labelled else [None] * len(table)
    members = []
    for row, (name, label) in enumerate(zip(table["file"], labels, strict=True), start=1):
        info = infos.get(name)
        if info is None or not name.lower().endswith(CLIPS.suffixes):
            message = f"'{name}' is no WAV or FLAC file in the archive"
            raise DatasetError(f"{INDEX}, row {row}, column 'file'", message)
        if label == "":
            raise DatasetError(f"{INDEX}, row {row}, column 'label'", "is empty")
        members.append((info, label))
    split = None
    if "split" in table.columns:
        split = check_split(table["split"], lambda i: f"{INDEX}, row {i + 1}, column 'split'")
    return members, split


def _clip(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> np.ndarray:
    """The member's samples, mono at `SAMPLE_RATE`."""
    try:
        samples, rate = decode(read_member(archive, info, budget))
    except AudioError as error:
        raise DatasetError(member_where(info), str(error)) from None
    return resample(samples, rate)
