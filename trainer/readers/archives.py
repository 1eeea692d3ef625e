"""zip archives of examples in class folders (or a flat list when unlabelled), what the image
and audio readers share: the archive is checked from its central directory before anything is
decompressed, and each member is read capped at its declared size."""

import zipfile
from dataclasses import dataclass
from pathlib import Path

from trainer.readers.common import DatasetError, ReadLimits, check_archive, member_where


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
