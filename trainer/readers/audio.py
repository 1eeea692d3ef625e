"""zip archives of WAV or FLAC clips: one folder per class, or a flat list when unlabelled, or
clips anywhere in the archive listed by a table at its root, `labels.csv` (columns `file`, the
clip's path in the archive, `label` (multilabel: `labels`) and optionally `split`; clips it does
not list are not read: `trainer.readers.archives`).
Each clip is decoded by soundfile, its channels averaged to mono, resampled to the one rate of
every audio dataset (`trainer.waveforms.SAMPLE_RATE`) and zero-padded at its end to the
archive's longest clip: a model reads clips of one length."""

import zipfile
from pathlib import Path

import numpy as np

from trainer.readers.archives import (
    MemberKind,
    labelled_members,
    labels_of,
    member_names,
    open_zip,
    read_member,
)
from trainer.readers.common import (
    DatasetError,
    ParsedDataset,
    ReadLimits,
    member_where,
)
from trainer.waveforms import SAMPLE_RATE, AudioError, decode, padded, resample

CLIPS = MemberKind("clips", "a WAV or FLAC file", (".wav", ".flac"))


def holds_audio(path: Path, limits: ReadLimits) -> bool:
    """Whether a zip archive holds a clip: it is then read as clips, any other member refused
    by name (else it is read as images)."""
    with open_zip(path) as archive:
        names = member_names(archive, limits)
    return any(info.filename.lower().endswith(CLIPS.suffixes) for info in names)


def read(path: Path, labelled: bool, limits: ReadLimits, task: str) -> ParsedDataset:
    with open_zip(path) as archive:
        members, split = labelled_members(archive, limits, labelled, CLIPS, task)
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
    y, labels, task = labels_of(members, labelled, task)
    return ParsedDataset("audio", x, None, y, labels, split, None, task=task)


def preview(path: Path, count: int, limits: ReadLimits) -> dict:
    """Each of the first `count` clips' label, file and duration."""
    rows = []
    with open_zip(path) as archive:
        budget = limits.max_uncompressed_bytes
        members, _split = labelled_members(archive, limits, False, CLIPS, "classification")
        for info, folder in members[:count]:
            clip = _clip(archive, info, budget)
            budget -= info.file_size
            seconds = round(len(clip) / SAMPLE_RATE, 3)
            rows.append({"label": folder, "file": info.filename, "seconds": seconds})
    return {"rows": rows}


def _clip(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> np.ndarray:
    """The member's samples, mono at `SAMPLE_RATE`."""
    try:
        samples, rate = decode(read_member(archive, info, budget))
    except AudioError as error:
        raise DatasetError(member_where(info), str(error)) from None
    return resample(samples, rate)
