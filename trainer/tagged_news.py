"""Entity-tagged sentences made from the BBC News articles (`trainer.text_corpora`) by a fixed
rule, for token tagging: no tagged corpus ships in a package we can install, so the project
makes one and says how.

Sentences are cut from each article's body (after its headline) at `.`, `!` or `?` before a
capital; the first SENTENCES_PER_ARTICLE of 6 to 40 words are kept. Words are runs of letters
or digits (an amount keeps its currency sign, decimals and `bn`/`m`/`k`/`%` suffix) and single
punctuation marks. Tags, BIO:

- `PER`: the one or two capitalised words after a title (Mr, Mrs, Ms, Dr, with or without a
  full stop); the title itself is not tagged. The model must learn from context: the same
  names appear untitled, untagged.
- `MONEY`: an amount in pounds, dollars or euros (`£600m`, `$1.13bn`).
- `PERCENT`: a number with `%` (`76%`).
- `DATE`: a month's name, with the day number before it or the year after it (`3 March`,
  `December 2004`).

Every rule reads the words alone, so the tags are exactly what the rule says; what a model
learns of them is measured on articles it has not seen (the split is by article).
"""

import re
from functools import cache

from trainer.text_corpora import load_bbc_news

SENTENCES_PER_ARTICLE = 4
MIN_WORDS, MAX_WORDS = 6, 40
WORD = re.compile(r"[£$€]?\d+(?:[.,]\d+)*(?:bn|m|k|%)?|\w+(?:['\u2019]\w+)*|[^\w\s]")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
TITLES = {"Mr", "Mrs", "Ms", "Dr"}
MONTHS = {
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
}  # fmt: skip
TAGS = ("O", "B-PER", "I-PER", "B-MONEY", "B-PERCENT", "B-DATE", "I-DATE")


def tag(words: list[str]) -> list[str]:
    """The rule's BIO tag of each word."""
    tags = ["O"] * len(words)
    for i, word in enumerate(words):
        if word[0] in "£$€" and len(word) > 1:
            tags[i] = "B-MONEY"
        elif word.endswith("%") and word[0].isdigit():
            tags[i] = "B-PERCENT"
        elif word in TITLES:
            start = i + 2 if words[i + 1 : i + 2] == ["."] else i + 1
            for offset, name in enumerate(words[start : start + 2]):
                if not (name[:1].isupper() and name.isalpha()) or name in TITLES:
                    break
                tags[start + offset] = "I-PER" if offset else "B-PER"
        elif word in MONTHS:
            day = i > 0 and words[i - 1].isdigit() and 1 <= int(words[i - 1]) <= 31
            year = re.fullmatch(r"(19|20)\d\d", words[i + 1]) if i + 1 < len(words) else None
            first = i - 1 if day else i
            tags[first] = "B-DATE"
            tags[i] = "I-DATE" if day else "B-DATE"
            if year:
                tags[i + 1] = "I-DATE"
    return tags


@cache
def tagged_sentences() -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], list[int]]:
    """Words, their tags, and the index of the article each sentence comes from."""
    texts, _labels, _names = load_bbc_news()
    words_of, tags_of, article_of = [], [], []
    for article, text in enumerate(texts):
        body = text.split("\n", 1)[-1]
        kept = 0
        for sentence in SENTENCE_END.split(" ".join(body.split())):
            words = WORD.findall(sentence)
            if not MIN_WORDS <= len(words) <= MAX_WORDS:
                continue
            words_of.append(tuple(words))
            tags_of.append(tuple(tag(words)))
            article_of.append(article)
            kept += 1
            if kept == SENTENCES_PER_ARTICLE:
                break
    return words_of, tags_of, article_of
