"""Text generation from a stored causal language model: a prompt or a conversation in, text
out, piece by piece as it is sampled (for streaming), with OpenAI's sampling settings.

A Hugging Face model decodes with its key-value cache, one token a step; tunery's own
`transformer` reads the whole sequence again each step (it has no cache), up to its
`max_length`. Temperature and nucleus (top-p) sampling are `transformers`' logits warpers;
the random draws come from the request's `seed` when it gives one.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from trainer.architectures import Network
from trainer.artifact import load_weights
from trainer.card import ModelCard
from trainer.chat_format import ChatTokenizer
from trainer.language_model import next_token_logits, output_layer
from trainer.readers.chat import Message
from trainer.trunk import trunk_from_card


class Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(256, ge=1, le=32_768, description="New tokens, at most.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 always takes the likeliest token.")
    top_p: float = Field(1.0, gt=0, le=1, description="Sample from the likeliest tokens whose "
                         "probabilities add up to top_p.")  # fmt: skip
    stop: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, max_length=4,
        description="Text that ends the answer where it appears (not included).",
    )  # fmt: skip
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="The same seed and settings "
                             "give the same answer.")  # fmt: skip


FinishReason = Literal["stop", "length"]


@dataclass
class Generation:
    """A generation under way: its text pieces come from `pieces()`; once they are all out,
    why it ended and the token counts."""

    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: FinishReason = "length"
    text: str = ""
    _pieces: Iterator[str] = field(default_factory=lambda: iter(()), repr=False)

    def pieces(self) -> Iterator[str]:
        yield from self._pieces


class LanguageModel:
    """A stored causal language model, ready to generate."""

    def __init__(self, path: Path) -> None:
        loaded = load_weights(path)
        card = loaded.card
        if card.task != "causal_lm":
            raise ValueError(f"a {card.task} model does not generate text; a causal_lm one does")
        trunk = trunk_from_card(card)
        self.network = Network(trunk.normalize, trunk.backbone, output_layer(trunk))
        self.network.load_state_dict(loaded.state, strict=True)
        self.network.eval()
        self.card: ModelCard = card
        self.tokenizer = ChatTokenizer(card)
        self.max_length: int = trunk.backbone.max_length
        tensors = [*self.network.parameters(), *self.network.buffers()]
        self.size_bytes = sum(t.numel() * t.element_size() for t in tensors)

    def prompt_ids(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None
    ) -> list[int]:
        """A conversation to answer (its chat template's generation prompt), or text to
        continue."""
        return self.tokenizer.prompt(messages=messages, text=prompt)

    def generate(self, prompt_ids: list[int], sampling: Sampling) -> Generation:
        """Starts nothing until its pieces are read; read them all to finish it."""
        generation = Generation(prompt_tokens=len(prompt_ids))
        generation._pieces = self._pieces(prompt_ids, sampling, generation)
        return generation

    @torch.inference_mode()
    def _pieces(
        self, prompt_ids: list[int], sampling: Sampling, generation: Generation
    ) -> Iterator[str]:
        choose = _Chooser(sampling)
        decoder = _Decoder(self.network)
        limit = min(sampling.max_tokens, self.max_length - len(prompt_ids))
        tokens: list[int] = []
        sent = ""  # the text given out so far
        logits = decoder.start(prompt_ids)
        while len(tokens) < limit:
            token = choose(logits)
            if token == self.tokenizer.eos_id:
                generation.finish_reason = "stop"
                break
            tokens.append(token)
            generation.completion_tokens = len(tokens)
            text = self.tokenizer.decode(tokens)
            cut = min((text.find(s) for s in sampling.stop if s in text), default=-1)
            if cut >= 0:
                generation.finish_reason = "stop"
                if cut > len(sent):
                    yield text[len(sent) : cut]
                generation.text = text[:cut]
                return
            # Hold back what may begin a stop text, and a character not yet whole.
            ready = _safe_end(text, sampling.stop)
            if ready > len(sent):
                yield text[len(sent) : ready]
                sent = text[:ready]
            logits = decoder.step(token)
        text = self.tokenizer.decode(tokens)
        if len(text) > len(sent):
            yield text[len(sent) :]
        generation.text = text


class _Chooser:
    """The next token from its logits: the likeliest at temperature 0, else a draw after
    `transformers`' temperature and top-p warpers, from the request's seed."""

    def __init__(self, sampling: Sampling) -> None:
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.greedy = sampling.temperature == 0
        self.warpers = []
        if not self.greedy and sampling.temperature != 1:
            self.warpers.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_p < 1:
            self.warpers.append(TopPLogitsWarper(sampling.top_p))
        self.random = torch.Generator()
        self.random.manual_seed(sampling.seed if sampling.seed is not None else torch.seed())

    def __call__(self, logits: torch.Tensor) -> int:
        scores = logits.float().view(1, -1)
        if self.greedy:
            return int(scores.argmax())
        for warp in self.warpers:
            scores = warp(None, scores)
        return int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=self.random))


class _Decoder:
    """Next-token logits, one token at a time: a Hugging Face model's from its key-value
    cache, tunery's own from the whole sequence again."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.cached = hasattr(network.backbone, "logits")
        self.sequence = torch.empty(1, 0, dtype=torch.long)
        self.cache = None

    def start(self, prompt_ids: list[int]) -> torch.Tensor:
        return self._run(torch.tensor([prompt_ids], dtype=torch.long))

    def step(self, token: int) -> torch.Tensor:
        return self._run(torch.tensor([[token]], dtype=torch.long))

    def _run(self, new: torch.Tensor) -> torch.Tensor:
        if self.cached:  # only the last position's logits are computed
            out = self.network.backbone.lm(
                input_ids=new, cache=self.cache, use_cache=True, logits_to_keep=1
            )
            self.cache = out.cache
            return out.logits[0, -1]
        self.sequence = torch.cat([self.sequence, new], dim=1)
        mask = torch.ones_like(self.sequence)
        return next_token_logits(self.network, self.sequence, mask)[0, -1]


def _safe_end(text: str, stop: Sequence[str]) -> int:
    """How much of `text` may go out: not a trailing replacement character (a character whose
    bytes are not all decoded yet), nor a tail that may begin a stop text."""
    end = len(text.rstrip("\ufffd"))
    for s in stop:
        for n in range(min(len(s) - 1, end), 0, -1):
            if text[:end].endswith(s[:n]):
                end -= n
                break
    return end
