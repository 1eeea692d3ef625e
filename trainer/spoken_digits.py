"""Spoken digits, synthesised by espeak-ng (a Debian package `make` installs; nothing is
downloaded): the words "zero" to "nine" said by 12 of its English voices, 6 male and 6 female,
each at 3 speaking styles (rate and pitch), 360 one-second clips at `SAMPLE_RATE`.

The rule of the speaker shift (`builtin:spoken-digits-male` -> `builtin:spoken-digits-female`):
the source is the male voice variants `en+m1` to `en+m6`, the target the female ones `en+f1` to
`en+f5` and `en+steph`; both are said in the same styles, so voice is what differs. The harder
shift adds a channel: `builtin:spoken-digits-female-telephone` is the female clips as a
telephone line carries them (`telephone`: the 300-3400 Hz band, 8-bit mu-law, line noise).

espeak-ng is deterministic (the same text, voice, rate and pitch give the same samples), so the
clips are made once, on first use, and kept in the cache directory (`TUNERY_CACHE_DIR`, the
service's local cache, `var/cache` by default) under a name that changes with this recipe.
"""

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np

from trainer.waveforms import SAMPLE_RATE, decode, padded, resample

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MALE_VOICES = ("m1", "m2", "m3", "m4", "m5", "m6")
FEMALE_VOICES = ("f1", "f2", "f3", "f4", "f5", "steph")
STYLES = ((140, 35), (175, 50), (210, 65))  # (words per minute, pitch 0-99)
CLIP_SAMPLES = SAMPLE_RATE  # one second: the longest word (0.81 s, f4's slowest "nine") fits
SILENCE = 0.01  # of the clip's peak: quieter samples at either end are trimmed
RECIPE = "spoken-digits-v1"  # the cache file's name: change it with anything above


def cache_dir() -> Path:
    return Path(os.environ.get("TUNERY_CACHE_DIR", "var/cache"))


def _espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise RuntimeError(
            "the built-in spoken digits are synthesised by espeak-ng, which is not installed: "
            "run `make install` (or `apt-get install espeak-ng`)"
        )
    return found


def _say(espeak: str, word: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    """One clip: the word, its silences trimmed, at `SAMPLE_RATE`, zero-padded to one second."""
    wav = subprocess.run(
        [espeak, "-v", f"en+{voice}", "-s", str(rate), "-p", str(pitch), "--stdout", word],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    samples, espeak_rate = decode(wav)
    samples = resample(samples, espeak_rate)
    loud = np.flatnonzero(np.abs(samples) >= SILENCE * np.abs(samples).max())
    return samples[loud[0] : loud[-1] + 1][:CLIP_SAMPLES]


def _synthesise() -> dict[str, np.ndarray]:
    espeak = _espeak()
    takes = [
        (word, voice, rate, pitch)
        for voice in MALE_VOICES + FEMALE_VOICES
        for rate, pitch in STYLES
        for word in WORDS
    ]
    with ThreadPoolExecutor(4) as pool:  # each clip is its own espeak-ng process
        clips = list(pool.map(lambda take: _say(espeak, *take), takes))
    return {
        "x": padded(clips, CLIP_SAMPLES),
        "digit": np.array([WORDS.index(word) for word, *_ in takes]),
        "voice": np.array([voice for _, voice, *_ in takes]),
    }


@cache
def spoken_digits() -> dict[str, np.ndarray]:
    """Every clip (`x`, (360, CLIP_SAMPLES) float32), its digit and its voice, from the cache,
    synthesised into it first if it is not there."""
    path = cache_dir() / f"{RECIPE}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")  # no reader ever sees half a file
        with open(partial, "wb") as file:
            np.savez(file, **_synthesise())
        os.replace(partial, path)
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


TELEPHONE_BAND = (300.0, 3400.0)  # Hz: the voice band of a telephone line (ITU-T G.712)
TELEPHONE_SNR_DB = 20.0  # the line's noise, below each clip's speech power
MU = 255  # 8-bit mu-law companding (ITU-T G.711)


def telephone(clips: np.ndarray, seed: int = 0) -> np.ndarray:
    """`clips` (N, samples) as a telephone line carries them: band-passed to `TELEPHONE_BAND`
    (a 4th-order Butterworth filter, forwards and backwards), quantised to 8-bit mu-law, with
    white noise at `TELEPHONE_SNR_DB` below each clip's power (drawn by `seed`): a channel
    shift that removes the low and high bands a model trained on clean speech reads."""
    from scipy.signal import butter, sosfiltfilt

    band = butter(4, TELEPHONE_BAND, btype="bandpass", fs=SAMPLE_RATE, output="sos")
    passed = sosfiltfilt(band, clips, axis=1)
    peak = np.abs(passed).max(axis=1, keepdims=True).clip(min=1e-9)
    companded = np.sign(passed) * np.log1p(MU * np.abs(passed) / peak) / np.log1p(MU)
    quantised = np.round(companded * 127) / 127
    expanded = np.sign(quantised) * ((1 + MU) ** np.abs(quantised) - 1) / MU * peak
    power = (expanded**2).mean(axis=1, keepdims=True)
    noise = np.random.default_rng(seed).normal(size=clips.shape)
    noisy = expanded + noise * np.sqrt(power / 10 ** (TELEPHONE_SNR_DB / 10))
    return noisy.astype(np.float32)
