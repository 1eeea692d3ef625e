"""The model card: what a model says about itself, as one typed contract.

The trainer writes it into the safetensors header (`trainer.artifact`), the worker stores it
with the model's row, the API serves it and rebuilds models from it, exports copy it. Every
reader parses it once (`ModelCard.model_validate`) and reads its fields. Its JSON is the
format `tunery.model/1`: fields are only ever added, with defaults, so that older cards parse.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CARD_FORMAT = "tunery.model/1"


class Normalization(BaseModel):
    """Per-channel (images) or per-feature (tables) input statistics the model applies."""

    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)


class TableColumn(BaseModel):
    """A column of the table a tabular model was trained on, as predict reads a row's value of
    it: a number (booleans as 0 and 1), or one of its `categories` (one-hot encoded)."""

    name: str
    categories: list[str] | None = None  # a categorical column's values, in encoding order


class LogMelSettings(BaseModel):
    """How an audio model turns its waveform (mono, `sample_rate`) into the log-mel spectrogram
    its backbone reads (`trainer.architectures.log_mel`): a Hann-windowed STFT of `win_length`
    samples zero-padded to `n_fft`, every `hop_length` samples, `n_mels` mel bands (Slaney
    scale and area normalisation, as librosa's default) between `f_min` and `f_max` Hz, then the
    log of each band's power. The defaults are speech recognition's usual 25 ms windows every
    10 ms at 16 kHz."""

    sample_rate: int = Field(16000, ge=1000, le=192000)
    n_fft: int = Field(512, ge=16, le=8192)
    win_length: int = Field(400, ge=16, le=8192)
    hop_length: int = Field(160, ge=1, le=8192)
    n_mels: int = Field(40, ge=1, le=512)
    f_min: float = Field(0.0, ge=0)
    f_max: float | None = None  # None: the Nyquist frequency, sample_rate / 2


class Adapter(BaseModel):
    """A LoRA adapter kept apart from its base (`lora_merge: false`)."""

    rank: int
    alpha: float
    dropout: float
    target_modules: str | list[str] = "all-linear"  # peft's: the layers that carry adapters


class TrunkCard(BaseModel):
    """What rebuilds a trunk (input normalisation and backbone): the part that transfers."""

    architecture: str
    params: dict[str, Any] = Field(default_factory=dict)  # every param, defaults included
    input_shape: list[int]  # of one example; text: [max_length] token ids
    normalization: Normalization | None = None
    tokenizer: str | None = None  # text: a `tokenizers` JSON
    vocab_size: int | None = None  # text
    # tables: the input features, in order; series: the columns of a context's rows
    feature_names: list[str] | None = None
    # tables: the columns that make those features, so that predict takes rows by column name
    columns: list[TableColumn] | None = None
    # audio: the front end inside the model; `input_shape` is then [samples] of one clip
    log_mel: LogMelSettings | None = None
    # series: how many leading columns of a context (the series forecast) the model reads as
    # their changes from the context's last row
    changes_from_last_row: int | None = None

    def trunk(self) -> "TrunkCard":
        """These fields alone, as a card of their own (for a model that starts from them)."""
        return TrunkCard.model_validate(self.model_dump(include=set(TrunkCard.model_fields)))

    @property
    def modality(self) -> Literal["text", "image", "tabular", "series", "audio"]:
        if self.tokenizer:
            return "text"
        if self.log_mel:
            return "audio"
        return {3: "image", 2: "series"}.get(len(self.input_shape), "tabular")


class ModelCard(TrunkCard):
    """A trained (or imported) model: its trunk, its task head, where it comes from and how it
    scored."""

    # Cards of other versions of the format may carry more: kept, never dropped.
    model_config = ConfigDict(extra="allow")

    format: str = CARD_FORMAT
    task: str  # classification, regression, features, or a pretext task (autoencoder, ...)
    labels: list[str] = Field(default_factory=list)  # classification, multilabel: the labels
    # regression: the values it predicts; forecasting: the series it forecasts
    targets: list[str] = Field(default_factory=list)
    # regression: the targets' mean and standard deviation on the training split; forecasting:
    # those of the training windows' changes from their context's last values. The model
    # predicts in the targets' units
    target_scaling: Normalization | None = None
    # multilabel: each label's probability threshold, tuned on the validation split
    thresholds: list[float] | None = None
    horizon: int | None = None  # forecasting: the rows it forecasts after its context
    season: int | None = None  # forecasting: the series' season, in rows (MASE's lag)
    # forecasting: per series, MASE's denominator, the training part's mean absolute
    # seasonal difference (in the series' units)
    mase_scale: list[float] | None = None
    adapter: Adapter | None = None
    metrics: dict[str, int | float] = Field(default_factory=dict)  # counts stay integers
    model_id: str | None = None
    name: str | None = None
    created_at: float | None = None  # seconds since the epoch
    # Trained by a job:
    job_id: str | None = None
    parent_model_id: str | None = None  # the base it was fine-tuned from
    kind: str | None = None
    method: str | None = None
    spec: dict[str, Any] | None = None  # the job's spec, as submitted
    # Imported: where from (a file name, or `hf:NAME`).
    imported_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The card as JSON values: every field, null where it does not apply."""
        return self.model_dump(mode="json")
