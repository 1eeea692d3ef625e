"""Waveforms as audio models read them: mono float32 at one sample rate, `SAMPLE_RATE`, for
every audio dataset (uploads are resampled to it), so that any audio model can fine-tune on any
audio dataset whose clips have its length. Files are decoded by soundfile (libsndfile: WAV and
FLAC, any sample format) and resampled by scipy's polyphase filter."""

import io
import math

import numpy as np
import soundfile

SAMPLE_RATE = 16000  # Hz: speech's usual rate; the log-mel front end's default
AUDIO_FORMATS = ("WAV", "FLAC")  # soundfile's names; nothing else is decoded
MAX_CLIP_SECONDS = 30.0  # one example's longest clip, uploaded or sent to predict


class AudioError(ValueError):
    """Bytes that are not a WAV or FLAC file this service reads."""


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """A WAV or FLAC file's samples, channels averaged to mono (float32 in [-1, 1]), and its
    sample rate; its length is checked from the header before the samples are decoded."""
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as file:
            if file.format not in AUDIO_FORMATS:
                raise AudioError(f"is {file.format} audio; WAV and FLAC files are read")
            seconds = file.frames / file.samplerate
            if seconds > MAX_CLIP_SECONDS:
                message = f"lasts {seconds:.1f} s; clips of at most {MAX_CLIP_SECONDS:g} s are read"
                raise AudioError(message)
            samples = file.read(dtype="float32", always_2d=True)
            rate = file.samplerate
    except AudioError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioError(f"not a WAV or FLAC file soundfile can decode: {error}") from None
    if len(samples) == 0:
        raise AudioError("holds no samples")
    return samples.mean(axis=1), rate


def resample(samples: np.ndarray, rate: int, to: int = SAMPLE_RATE) -> np.ndarray:
    """`samples` at `rate` Hz as they would be at `to` Hz (polyphase, with its anti-aliasing
    low-pass when going down)."""
    if rate == to:
        return samples.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    common = math.gcd(rate, to)
    return resample_poly(samples, to // common, rate // common).astype(np.float32)


def padded(clips: list[np.ndarray], length: int) -> np.ndarray:
    """The clips as one (N, length) array, each zero-padded at its end (none may be longer)."""
    out = np.zeros((len(clips), length), dtype=np.float32)
    for i, clip in enumerate(clips):
        out[i, : len(clip)] = clip
    return out
