"""The audio front end inside an audio model: raw mono waveforms (N, samples) in, log-mel
spectrograms (N, 1, n_mels, frames) out, so that a saved model, `predict` and its ONNX graph all
take waveforms, and the image backbones (cnn, resnet) read the spectrogram as a one-channel
image.

It is `torch.stft` and a matrix product: the dynamo ONNX exporter (opset 18) turns the STFT into
its own `STFT` operator, which onnxruntime runs (tests/test_audio.py compares the two), so no
conv1d with fixed DFT kernels is needed. The window and the mel filterbank are computed from the
card's settings (`LogMelSettings`) each time the model is built, not stored with the weights.
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from trainer.card import LogMelSettings
from trainer.waveforms import SAMPLE_RATE

# Below this power a band is silence: the log stays finite on all-zero padding.
POWER_FLOOR = 1e-10


def mel_filterbank(settings: LogMelSettings) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters over the STFT's bins: librosa's (Slaney's
    mel scale and area normalisation, its defaults)."""
    import librosa.filters

    filters = librosa.filters.mel(
        sr=settings.sample_rate, n_fft=settings.n_fft, n_mels=settings.n_mels,
        fmin=settings.f_min, fmax=settings.f_max,
    )  # fmt: skip
    return filters.T.astype(np.float32)


def log_mel_for(modality: str) -> LogMelSettings | None:
    """The front end a new model of data of this modality starts with: audio's (every audio
    dataset is at `SAMPLE_RATE`), no other's."""
    return LogMelSettings(sample_rate=SAMPLE_RATE) if modality == "audio" else None


def spectrogram_shape(settings: LogMelSettings, input_shape: Sequence[int]) -> tuple[int, ...]:
    """(1, n_mels, frames) of a clip of `input_shape` ([samples]); the STFT pads each end by
    n_fft // 2, so a frame starts every hop."""
    return (1, settings.n_mels, input_shape[0] // settings.hop_length + 1)


class LogMel(nn.Module):
    """Waveforms (N, samples) to log-mel power spectrograms (N, 1, n_mels, frames)."""

    def __init__(self, settings: LogMelSettings) -> None:
        super().__init__()
        self.settings = settings
        window = torch.hann_window(settings.win_length, periodic=True)
        padding = settings.n_fft - settings.win_length
        window = nn.functional.pad(window, (padding // 2, padding - padding // 2))
        # Not persistent: the settings in the card rebuild them exactly.
        self.register_buffer("window", window, persistent=False)
        filterbank = torch.from_numpy(mel_filterbank(settings))
        self.register_buffer("filterbank", filterbank, persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(
            waveforms,
            self.settings.n_fft,
            hop_length=self.settings.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spectrum.real**2 + spectrum.imag**2  # (N, bins, frames)
        mel = torch.matmul(power.transpose(1, 2), self.filterbank)  # (N, frames, n_mels)
        return torch.log(mel.clamp_min(POWER_FLOOR)).transpose(1, 2).unsqueeze(1)


@torch.no_grad()
def log_mel_spectrograms(
    waveforms: torch.Tensor, settings: LogMelSettings, batch: int = 256
) -> torch.Tensor:
    """The spectrograms of many clips, a batch at a time (the STFT's complex values of a whole
    dataset at once would be several times its waveforms' size)."""
    front = LogMel(settings)
    return torch.cat([front(waveforms[i : i + batch]) for i in range(0, len(waveforms), batch)])
