"""Chat, prompt/completion and preference examples in OpenAI's fine-tuning format (jsonl, one
example a line), parsed and checked with errors that name the line and the field.

- chat: `{"messages": [{"role": "system"|"user"|"assistant", "content": "...", "weight": 0|1}]}`
- prompt/completion: `{"prompt": "...", "completion": "..."}`
- preference (DPO): `{"input": {"messages": [...]}, "preferred_output": [{"role": "assistant",
  "content": "..."}], "non_preferred_output": [...]}`

Every line may carry a `split` too, as text lines do. A file holds one kind of example, the
kind of its first line. Chat and prompt/completion files are the "chat" modality, preference
files the "preference" modality; neither carries class labels.
"""

from collections.abc import Iterable
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails

from trainer.readers.common import DatasetError, ParsedDataset, UnlabelledFormat, add_line_split

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = get_args(Role)
Kind = Literal["chat", "completion", "preference"]

# OpenAI's function-calling fields: refused by name, so that the error says why.
TOOL_FIELDS = frozenset(
    {"tools", "parallel_tool_calls", "tool_calls", "tool_call_id", "functions", "function_call"}
)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str
    weight: Literal[0, 1] | None = None  # assistant turns: 0 leaves the turn out of the loss

    @field_validator("content")
    @classmethod
    def _assistant_turns_say_something(cls, content: str, info: ValidationInfo) -> str:
        if info.data.get("role") == "assistant" and not content.strip():
            raise ValueError("an assistant turn must not be empty")
        return content

    # Before validation: lax validation would take true and 1.0 for 1.
    @field_validator("weight", mode="before")
    @classmethod
    def _weight_of_an_assistant_turn(cls, weight: Any, info: ValidationInfo) -> Any:
        if weight is None:
            return None
        if type(weight) is not int or weight not in (0, 1):
            raise ValueError("must be 0 (leave the turn out of training) or 1")
        if info.data.get("role") != "assistant":
            raise ValueError("only assistant messages take a weight")
        return weight


class ChatExample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: tuple[Message, ...]

    @field_validator("messages")
    @classmethod
    def _has_an_assistant_turn(cls, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        if not any(message.role == "assistant" for message in messages):
            raise ValueError("no assistant message; a chat example is trained on its answers")
        return messages


class CompletionExample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    completion: str

    @field_validator("completion")
    @classmethod
    def _not_empty(cls, completion: str) -> str:
        if not completion.strip():
            raise ValueError("must not be empty")
        return completion


class PreferenceExample(BaseModel):
    """A preference pair, as read from a line in OpenAI's shape (`_PreferenceLine`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: tuple[Message, ...]  # the conversation so far, ending on a user (or system) turn
    preferred: str  # the assistant's answer to prefer
    non_preferred: str


Example = ChatExample | CompletionExample | PreferenceExample


class _PreferenceInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: tuple[Message, ...]

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        if not messages:
            raise ValueError("no messages; the input is the conversation the outputs answer")
        return messages


class _PreferenceLine(BaseModel):
    """A preference line as OpenAI's format has it, so that errors name the file's fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: _PreferenceInput
    preferred_output: tuple[Message, ...]
    non_preferred_output: tuple[Message, ...]

    @field_validator("preferred_output", "non_preferred_output")
    @classmethod
    def _one_assistant_message(cls, output: tuple[Message, ...]) -> tuple[Message, ...]:
        if len(output) != 1 or output[0].role != "assistant":
            raise ValueError("must be a list of exactly one assistant message")
        if output[0].weight is not None:
            raise ValueError("an output takes no weight: the whole answer is compared")
        return output

    def example(self) -> PreferenceExample:
        return PreferenceExample(
            input=self.input.messages,
            preferred=self.preferred_output[0].content,
            non_preferred=self.non_preferred_output[0].content,
        )


# The fields that show a line's kind, and the model a line of each kind is read with.
KIND_FIELDS: dict[Kind, tuple[str, ...]] = {
    "chat": ("messages",),
    "completion": ("prompt", "completion"),
    "preference": ("input", "preferred_output", "non_preferred_output"),
}
_LINE_MODELS: dict[Kind, type[BaseModel]] = {
    "chat": ChatExample,
    "completion": CompletionExample,
    "preference": _PreferenceLine,
}
MODALITY: dict[Kind, str] = {"chat": "chat", "completion": "chat", "preference": "preference"}
KIND_NAMES: dict[Kind, str] = {
    "chat": "chat",
    "completion": "prompt/completion",
    "preference": "preference",
}


def kind_of(fields: dict) -> Kind | None:
    """The kind of example a jsonl line holds, by its fields; None for none of these."""
    for kind, names in KIND_FIELDS.items():
        if any(name in fields for name in names):
            return kind
    return None


def parse_example(fields: dict, kind: Kind, where: str) -> Example:
    """The example of `kind` (the file's) in one line's `fields` (without `split`); raises
    `DatasetError` at `where` and the field (e.g. "line 3, field 'messages[2].role'")."""
    found = kind_of(fields)
    if found is not None and found != kind:
        name = next(name for name in KIND_FIELDS[found] if name in fields)
        message = (
            f"a {KIND_NAMES[found]} example in a file of {KIND_NAMES[kind]} examples "
            "(the first line's kind); a file holds one kind"
        )
        raise DatasetError(f"{where}, field '{name}'", message)
    try:
        line = _LINE_MODELS[kind].model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        at = f"{where}, field '{_path(first['loc'])}'" if first["loc"] else where
        raise DatasetError(at, _message(first)) from None
    return line.example() if isinstance(line, _PreferenceLine) else line


def without_split(fields: dict) -> dict:
    """A line's example fields: all but its `split`."""
    return {name: value for name, value in fields.items() if name != "split"}


def read(lines: Iterable[tuple[int, dict]], kind: Kind, labelled: bool) -> ParsedDataset:
    """The examples of a jsonl file's (line number, object) `lines`, all of `kind`."""
    if labelled:
        raise UnlabelledFormat("file", f"{KIND_NAMES[kind]} examples carry no class labels")
    examples: list[Example] = []
    splits: list[str] = []
    for number, fields in lines:
        where = f"line {number}"
        add_line_split(fields, where, splits, first=not examples)
        examples.append(parse_example(without_split(fields), kind, where))
    split = np.array(splits, dtype=str) if splits else None
    return ParsedDataset(MODALITY[kind], None, None, None, (), split, None, tuple(examples))


def role_counts(examples: Iterable[Example]) -> dict[str, int]:
    """Messages per role: a prompt counts as a user turn and a completion as an assistant turn;
    preference examples count their input's messages, and each pair of outputs once under
    "pairs"."""
    counts = dict.fromkeys(ROLES, 0)
    for example in examples:
        if isinstance(example, CompletionExample):
            roles = ["user", "assistant"]
        elif isinstance(example, ChatExample):
            roles = [message.role for message in example.messages]
        else:
            roles = [message.role for message in example.input]
            counts["pairs"] = counts.get("pairs", 0) + 1
        for role in roles:
            counts[role] += 1
    return counts


def _path(loc: tuple[int | str, ...]) -> str:
    """A field's path as JSON reads it: messages[2].role."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path


def _message(error: ErrorDetails) -> str:
    """Pydantic's error, said for the file's author."""
    match error["type"]:
        case "missing":
            return "required but missing"
        case "extra_forbidden" if error["loc"][-1] in TOOL_FIELDS:
            return "tools and function calls are not supported; give plain text messages"
        case "extra_forbidden":
            return "unknown field"
        case "string_type":
            return "must be a string"
        case "tuple_type":
            return "must be a list"
        case "model_type" | "model_attributes_type" | "dict_type":
            return "must be an object"
        case "literal_error":
            return f"must be {error['ctx']['expected']}"
        case "value_error":
            return str(error["ctx"]["error"])
    return error["msg"]
