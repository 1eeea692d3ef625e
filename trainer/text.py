"""Tokenizers for text models: byte-pair encoding trained on the job's own training texts with
the `tokenizers` library, and stored (as JSON) in the model card so the model keeps it."""

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

PAD, UNK, EOS = "[PAD]", "[UNK]", "[EOS]"  # ids 0, 1, 2: models treat id 0 as padding
PAD_ID = 0


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, UNK, EOS], show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def encode(tokenizer: Tokenizer, texts: Sequence[str], length: int) -> torch.Tensor:
    """Token ids, (N, length): truncated, or padded with id 0."""
    out = torch.zeros(len(texts), length, dtype=torch.long)
    for i, encoding in enumerate(tokenizer.encode_batch(list(texts))):
        ids = encoding.ids[:length]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def token_stream(tokenizer: Tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """All texts as one sequence of ids, each text followed by [EOS]."""
    eos = tokenizer.token_to_id(EOS)
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(list(texts)):
        ids += [*encoding.ids, eos]
    return torch.tensor(ids, dtype=torch.long)


def encode_documents(tokenizer: Tokenizer, texts: Sequence[str], length: int) -> torch.Tensor:
    """Token ids (N, length): each text's, then [EOS], truncated or padded with id 0."""
    eos = tokenizer.token_to_id(EOS)
    out = torch.full((len(texts), length), PAD_ID, dtype=torch.long)
    for i, encoding in enumerate(tokenizer.encode_batch(list(texts))):
        ids = [*encoding.ids, eos][:length]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def encode_words(
    tokenizer: Tokenizer, words_of: Sequence[Sequence[str]], length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, length) of texts already split into words, truncated or padded with id 0,
    and for each position the index of the word whose first piece it is; -1 at a word's later
    pieces, special tokens and padding. A word past `length` has no position."""
    ids = torch.zeros(len(words_of), length, dtype=torch.long)
    first = torch.full((len(words_of), length), -1, dtype=torch.long)
    encodings = tokenizer.encode_batch([list(words) for words in words_of], is_pretokenized=True)
    for i, encoding in enumerate(encodings):
        kept = encoding.ids[:length]
        ids[i, : len(kept)] = torch.tensor(kept, dtype=torch.long)
        previous = None
        for position, word in enumerate(encoding.word_ids[:length]):
            if word is not None and word != previous:
                first[i, position] = word
            previous = word
    return ids, first
