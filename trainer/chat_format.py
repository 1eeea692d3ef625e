"""Chat and prompt/completion examples as token ids, with the tokens a model learns marked:
an assistant's turns (those not weighted 0) and completions, each with the end-of-text token
that stops generation.

A conversation is rendered by the model's chat template (the base's own, through
`transformers`; `DEFAULT_CHAT_TEMPLATE` where it has none) piece by piece: what the template
adds before an assistant's turn (`add_generation_prompt`), then the turn. Each piece is
tokenized alone, so the mask is exact and a prompt at generation time tokenizes as it did in
training. A template that does not render a conversation as the start of its continuation
cannot be cut so, and is refused.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from trainer.card import TrunkCard
from trainer.readers.chat import ChatExample, CompletionExample, Message

# For models whose tokenizer has no chat template (tunery's own `transformer`, plain bases):
# each turn is its role, a colon and a new line, its text, and, after an assistant's, the
# end-of-text token.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}:\n{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant:\n{% endif %}"
)
# tunery's own tokenizers (trainer.text) name their special tokens so.
OWN_SPECIAL_TOKENS = {"eos_token": "[EOS]", "pad_token": "[PAD]", "unk_token": "[UNK]"}


def corpus(examples: Sequence[ChatExample | CompletionExample]) -> list[str]:
    """The texts of chat or prompt/completion examples, each turn after its role's name: what
    a tokenizer of tunery's own is trained on to read them under the default template."""
    texts = []
    for example in examples:
        if isinstance(example, CompletionExample):
            texts += [example.prompt, example.completion]
        else:
            texts += [f"{message.role}:\n{message.content}" for message in example.messages]
    return texts


class ChatTemplateError(ValueError):
    """The model's chat template cannot be used to train on a conversation."""


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    trained: list[bool]  # per token: whether the loss includes predicting it


class ChatTokenizer:
    """A model's tokenizer with its chat template and special tokens, from its card."""

    def __init__(self, card: TrunkCard) -> None:
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        params = card.params
        special = params.get("special_tokens") or OWN_SPECIAL_TOKENS
        self.template = params.get("chat_template") or DEFAULT_CHAT_TEMPLATE
        self.hf = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_str(card.tokenizer), **special
        )
        if self.hf.eos_token_id is None:
            raise ChatTemplateError("the model's tokenizer has no end-of-text token")
        self.eos_id: int = self.hf.eos_token_id
        # Padding is masked out of attention and loss, so any id does where none is named.
        self.pad_id: int = self.hf.pad_token_id if self.hf.pad_token_id is not None else self.eos_id

    def save(self, directory: Path) -> None:
        """As a Hugging Face tokenizer directory, chat template included."""
        self.hf.chat_template = self.template
        self.hf.save_pretrained(str(directory))

    def tokens(self, text: str) -> list[int]:
        return self.hf(text, add_special_tokens=False)["input_ids"] if text else []

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def render(self, messages: Sequence[Message], generation_prompt: bool) -> str:
        from jinja2 import TemplateError

        conversation = [{"role": m.role, "content": m.content} for m in messages]
        try:
            return self.hf.apply_chat_template(
                conversation,
                chat_template=self.template,
                add_generation_prompt=generation_prompt,
                tokenize=False,
            )
        except TemplateError as error:  # e.g. a template that raises on a role order
            raise ChatTemplateError(
                f"the chat template refuses the conversation: {error}"
            ) from None

    @cached_property
    def _bos(self) -> list[int]:
        return [self.hf.bos_token_id] if self.hf.bos_token_id is not None else []

    def encode(self, example: ChatExample | CompletionExample) -> Encoded:
        if isinstance(example, CompletionExample):
            prompt = self._bos + self.tokens(example.prompt)
            completion = [*self.tokens(example.completion), self.eos_id]
            return Encoded(prompt + completion, [False] * len(prompt) + [True] * len(completion))
        ids, trained = [], []
        for text, learns in self._pieces(example.messages):
            piece = self.tokens(text)
            ids += piece
            trained += [learns] * len(piece)
        return Encoded(ids, trained)

    def prompt(
        self, messages: Sequence[Message] | None = None, text: str | None = None
    ) -> list[int]:
        """A generation prompt: a conversation to answer, or a plain prompt to continue."""
        if messages is None:
            return self._bos + self.tokens(text or "")
        pieces = self._pieces(messages)
        done = "".join(text for text, _ in pieces)
        asked = self._continue(self.render(messages, generation_prompt=True), done)
        return [token for text, _ in [*pieces, (asked, False)] for token in self.tokens(text)]

    def _pieces(self, messages: Sequence[Message]) -> list[tuple[str, bool]]:
        """The rendered conversation cut where assistant turns begin and end: (text, whether
        it is a trained assistant turn)."""
        pieces, done = [], ""
        for i, message in enumerate(messages):
            if message.role == "assistant":
                asked = self.render(messages[:i], generation_prompt=True) if i else done
                pieces.append((self._continue(asked, done), False))
                done = asked
            through = self.render(messages[: i + 1], generation_prompt=False)
            learns = message.role == "assistant" and message.weight != 0
            pieces.append((self._continue(through, done), learns))
            done = through
        return pieces

    @staticmethod
    def _continue(text: str, done: str) -> str:
        if not text.startswith(done):
            raise ChatTemplateError(
                "the chat template does not render a conversation as the start of its "
                "continuation, so the assistant's tokens cannot be told apart"
            )
        return text[len(done) :]
