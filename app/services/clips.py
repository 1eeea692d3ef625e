"""What an audio model's `predict` takes: each input a clip, as a list of samples at the
model's sample rate (its card's `log_mel.sample_rate`) or as a base64 WAV or FLAC file at any
rate (decoded, its channels averaged, resampled to the model's); an npy body is a batch of
samples. Clips shorter than the model's are zero-padded at their end, as its training clips
were; a longer one is refused, naming it."""

import base64
import binascii

import numpy as np
import torch

from app.problems import InvalidInput
from trainer.card import ModelCard
from trainer.spec import SpecIssue
from trainer.waveforms import AudioError, decode, padded, resample

SHAPE = "a list of samples at {rate} Hz, or a base64 WAV or FLAC file"


def _samples(item: object, field: str, rate: int) -> np.ndarray:
    if isinstance(item, str):
        try:
            data = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput([SpecIssue(field, "is a string, but not base64")]) from None
        try:
            samples, file_rate = decode(data)
        except AudioError as error:
            raise InvalidInput([SpecIssue(field, str(error))]) from None
        return resample(samples, file_rate, rate)
    try:
        samples = np.asarray(item, dtype=np.float32)
    except (ValueError, TypeError):
        samples = None
    if samples is None or samples.ndim != 1 or len(samples) == 0:
        raise InvalidInput([SpecIssue(field, "must be " + SHAPE.format(rate=rate))])
    if not np.isfinite(samples).all():
        raise InvalidInput([SpecIssue(field, "contains NaN or infinite values")])
    return samples


def clip_batch(inputs: list | np.ndarray, card: ModelCard) -> torch.Tensor:
    """The request's clips as the model's batch (N, samples), or a 422 naming `inputs.<i>`."""
    rate, length = card.log_mel.sample_rate, card.input_shape[0]
    if isinstance(inputs, np.ndarray) and inputs.ndim != 2:
        message = f"has shape {list(inputs.shape)}; this model takes (clips, samples at {rate} Hz)"
        raise InvalidInput([SpecIssue("inputs", message)])
    clips = [_samples(item, f"inputs.{i}", rate) for i, item in enumerate(inputs)]
    for i, clip in enumerate(clips):
        if len(clip) > length:
            message = (
                f"is {len(clip)} samples at {rate} Hz ({len(clip) / rate:.2f} s); this model "
                f"takes clips of at most {length} ({length / rate:.2f} s)"
            )
            raise InvalidInput([SpecIssue(f"inputs.{i}", message)])
    return torch.from_numpy(padded(clips, length))
