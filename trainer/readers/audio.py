"""zip archives of WAV or FLAC clips: one folder per class, or a flat list when unlabelled.
Each clip is decoded by soundfile, its channels averaged to mono, resampled to the one rate of
every audio dataset (`trainer.waveforms.SAMPLE_RATE`) and zero-padded at its end to the
archive's longest clip: a model reads clips of one length."""

import zipfile
from pathlib import Path

import numpy as np

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
    encode_labels,
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


def read(path: Path, labelled: bool, limits: ReadLimits) -> ParsedDataset:
    with open_zip(path) as archive:
        members = class_members(archive, limits, labelled, CLIPS)
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
    return ParsedDataset("audio", x, None, y, labels, None, None)


def preview(path: Path, count: int, limits: ReadLimits) -> dict:
    """Each of the first `count` clips' label, file and duration."""
    rows = []
    with open_zip(path) as archive:
        budget = limits.max_uncompressed_bytes
        for info, folder in class_members(archive, limits, False, CLIPS)[:count]:
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
