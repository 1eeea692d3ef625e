"""docs/RESULTS.md is shared by the benchmarks: each one rewrites only its own section, kept
between `<!-- begin NAME -->` and `<!-- end NAME -->` (appended when the file has none)."""

from pathlib import Path


def write_section(path: Path, name: str, text: str) -> None:
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    section = f"{begin}\n{text.rstrip()}\n{end}\n"
    current = path.read_text() if path.exists() else ""
    if begin in current and end in current:
        before, rest = current.split(begin, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        path.write_text(before + section + ("\n" + after if after else ""))
    else:
        path.write_text(current + ("\n" if current else "") + section)
