"""zip archives of examples in class folders (or a flat list when unlabelled), or anywhere in
the archive as its index table `labels.csv` lists them: what the image and audio readers share.
The archive is checked from its central directory before anything is decompressed, and each
member is read capped at its declared size.

The index, at the archive's root, has a column `file` (an example's path in the archive), its
label in `label` (for a multilabel dataset, its labels in `labels`, `;`-separated, empty for
none) and optionally `split`; examples it does not list are not read."""

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainer.readers.common import (
    DatasetError,
    ReadLimits,
    check_archive,
    check_split,
    encode_label_sets,
    encode_labels,
    label_set,
    member_where,
)

INDEX = "labels.csv"
# Each example's member and its label (class folder or index cell; a multilabel index's cell
# holds the `;`-separated labels): None when unlabelled.
Members = list[tuple[zipfile.ZipInfo, str | None]]


@dataclass(frozen=True)
class MemberKind:
    """What an archive's examples are, for its members' checks and their messages."""

    plural: str  # "images"
    one: str  # "a PNG or JPEG file"
    suffixes: tuple[str, ...]  # lower case, with the dot


def open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise DatasetError("file", f"not a valid zip file: {error}") from None


def member_names(archive: zipfile.ZipFile, limits: ReadLimits) -> list[zipfile.ZipInfo]:
    """The archive's members that may be examples, checked, in name order."""
    infos = (info for info in check_archive(archive, limits) if not _ignored(info.filename))
    return sorted(infos, key=lambda info: info.filename)


def class_members(
    archive: zipfile.ZipFile, limits: ReadLimits, labelled: bool, kind: MemberKind
) -> list[tuple[zipfile.ZipInfo, str | None]]:
    """The example members in name order, each with its class folder (None when flat)."""
    infos = member_names(archive, limits)
    if not infos:
        raise DatasetError("file", f"the archive holds no {kind.plural}")
    paths = [info.filename.split("/") for info in infos]
    if len({path[0] for path in paths}) == 1 and all(len(path) >= 3 for path in paths):
        paths = [path[1:] for path in paths]  # one folder around the class folders
    foldered = len(paths[0]) == 2
    members = []
    singular = kind.plural.removesuffix("s")
    for info, path in zip(infos, paths, strict=True):
        if not info.filename.lower().endswith(kind.suffixes):
            raise DatasetError(member_where(info), f"not {kind.one}")
        if len(path) > 2 or (len(path) == 2) != foldered:
            message = f"expected class-folder/{singular} or a flat list of {kind.plural}"
            raise DatasetError(member_where(info), message)
        members.append((info, path[0] if foldered else None))
    if labelled and not foldered:
        message = f"no class folders; a labelled {singular} dataset needs one folder per class"
        raise DatasetError("file", message)
    return members


def labelled_members(
    archive: zipfile.ZipFile, limits: ReadLimits, labelled: bool, kind: MemberKind, task: str
) -> tuple[Members, np.ndarray | None]:
    """The examples with their labels and splits: as the index lists them, else in name
    order with their class folders (a multilabel dataset needs the index)."""
    infos = {info.filename: info for info in member_names(archive, limits)}
    if INDEX in infos:
        return _indexed(archive, infos, limits, labelled, kind, task)
    if labelled and task == "multilabel":
        message = (
            f"a multilabel archive lists each {kind.plural.removesuffix('s')}'s labels in a "
            f"{INDEX} at its root (columns file and labels)"
        )
        raise DatasetError("file", message)
    return class_members(archive, limits, labelled, kind), None


def _indexed(
    archive: zipfile.ZipFile,
    infos: dict[str, zipfile.ZipInfo],
    limits: ReadLimits,
    labelled: bool,
    kind: MemberKind,
    task: str,
) -> tuple[Members, np.ndarray | None]:
    data = read_member(archive, infos[INDEX], limits.max_uncompressed_bytes)
    try:
        table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError) as error:
        raise DatasetError(INDEX, f"cannot parse the table: {error}") from None
    label_column = "labels" if task == "multilabel" else "label"
    needed = ("file", label_column) if labelled else ("file",)
    missing = [column for column in needed if column not in table.columns]
    if missing:
        message = (
            f"has no column '{missing[0]}': it names each {kind.plural.removesuffix('s')}'s "
            f"`file` and its `{label_column}`"
        )
        raise DatasetError(INDEX, message)
    if table.empty:
        raise DatasetError(INDEX, f"lists no {kind.plural}")
    labels = table[label_column] if labelled else [None] * len(table)
    members = []
    for row, (name, label) in enumerate(zip(table["file"], labels, strict=True), start=1):
        info = infos.get(name)
        if info is None or not name.lower().endswith(kind.suffixes):
            message = f"'{name}' is not {kind.one} in the archive"
            raise DatasetError(f"{INDEX}, row {row}, column 'file'", message)
        if label == "" and task != "multilabel":  # a multilabel example may have no label
            raise DatasetError(f"{INDEX}, row {row}, column 'label'", "is empty")
        members.append((info, label))
    split = None
    if "split" in table.columns:
        split = check_split(table["split"], lambda i: f"{INDEX}, row {i + 1}, column 'split'")
    return members, split


def labels_of(
    members: Members, labelled: bool, task: str
) -> tuple[np.ndarray | None, tuple[str, ...], str]:
    """The examples' encoded labels (class indices, or a multilabel dataset's multi-hot rows),
    the label names, and the task they are for."""
    if not labelled:
        return None, (), "classification"
    if task == "multilabel":
        sets = [label_set(cell or "") for _info, cell in members]
        return (*encode_label_sets(sets, INDEX), task)
    return (*encode_labels([label for _info, label in members], "file"), task)


def _ignored(name: str) -> bool:
    """Directories and what archivers add on their own: __MACOSX/, .DS_Store, dotfiles."""
    parts = name.split("/")
    return name.endswith("/") or "__MACOSX" in parts or any(p.startswith(".") for p in parts)


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """The member's bytes, never more than it declares (nor than `budget`) held in memory."""
    where = member_where(info)
    if info.flag_bits & 0x1:
        raise DatasetError(where, "is encrypted")
    if info.file_size > budget:
        raise DatasetError("file", "the archive expands past its allowed size")
    try:
        with archive.open(info) as member:
            data = member.read(info.file_size + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as error:
        # zipfile stops at the declared size; a member holding more fails its CRC check here.
        message = f"does not match its declared size and checksum, or is damaged: {error}"
        raise DatasetError(where, message) from None
    if len(data) > info.file_size:
        raise DatasetError(where, f"holds more than its declared {info.file_size} bytes")
    return data
