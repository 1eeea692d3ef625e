"""Tokenizers for text models: byte-pair encoding trained on the job's own training texts with
the `tokenizers` library, and stored (as JSON) in the model card so the model keeps it."""

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

PAD, UNK, EOS = "[PAD]", "[UNK]", "[EOS]"  # ids 0, 1, 2: models treat id 0 as padding


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
