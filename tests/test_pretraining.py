"""Pretraining that transfers: the autoencoder's corruption, the pretext heads' standardised
features, a new head fitted to a trained backbone's features before fine-tuning (LP-FT), the
warnings a fine-tune gets from a doubtful base, SimCSE's spans, and bench.pretraining's report."""

import pytest
import torch
from torch import nn

from bench import pretraining as bench
from tests.test_methods import FAST, FEW_DIGITS, TINY_CNN, TINY_TRANSFORMER, run
from trainer.architectures import Network
from trainer.card import ModelCard
from trainer.data import Split, load_dataset
from trainer.heads import HEADS
from trainer.methods import autoencoder, simcse
from trainer.methods.pretraining import FEW_STEPS, doubts
from trainer.methods.supervised import Params, fit_head, fits_head
from trainer.run import LoadedModel, RunContext
from trainer.spec import FinetuneSpec


def pretrained(method: str, hyperparameters: dict = FAST) -> LoadedModel:
    result, _ = run(
        {"kind": "pretrain", "model": TINY_CNN, "method": {"name": method},
         "data": {"train": FEW_DIGITS}, "hyperparameters": hyperparameters}
    )  # fmt: skip
    return LoadedModel(result.model.state_dict(), result.card)


def finetune(base: LoadedModel | None, params: dict, hyperparameters: dict = FAST):
    spec = {"kind": "finetune", "method": {"name": "supervised", "params": params},
            "data": {"train": FEW_DIGITS}, "hyperparameters": hyperparameters}  # fmt: skip
    spec |= {"base_model_id": "model_x"} if base else {"model": TINY_CNN}
    return run(spec, base)


def logs(events: list[dict]) -> list[str]:
    return [e["message"] for e in events if e["type"] == "log"]


def test_the_autoencoder_warps_images_then_hides_patches():
    x = load_dataset("builtin:digits").splits["train"].x[:64]
    x = 1 + x / x.max()  # no value near 0, which is what a hidden one is
    params = autoencoder.Params(noise_std=0.0)
    corrupted = autoencoder.corrupt(x, params, torch.Generator().manual_seed(0))
    patches = corrupted.unfold(2, 4, 4).unfold(3, 4, 4)  # (N, 1, 7, 7, 4, 4)
    hidden = (patches == 0).flatten(-2).all(-1)
    assert 0.4 < hidden.float().mean() < 0.6  # mask_ratio 0.5 of the 4x4 patches
    # What is left is not the image in place: it was warped (shifted, rotated, zoomed) first.
    shown = ~hidden.repeat_interleave(4, 2).repeat_interleave(4, 3)
    assert (corrupted - x)[shown].abs().mean() > 0.1 * x.abs().mean()
    unwarped = autoencoder.Params(noise_std=0.0, max_shift=0, max_rotation=0, scale_range=(1, 1))
    same = autoencoder.corrupt(x, unwarped, torch.Generator().manual_seed(0))
    ratio = same[same != 0] / x[same != 0]  # only the contrast jitter, one factor an image
    assert ratio.min() > 0.69 and ratio.max() < 1.31


@pytest.mark.parametrize("name", ["autoencoder", "contrastive"])
def test_pretext_heads_are_blind_to_the_scale_of_the_features(name):
    """So that growing the features cannot lower the pretext loss: they leave pretraining near
    a fresh network's scale, which a fine-tune's first steps would otherwise pay for."""
    result, _ = run(
        {"kind": "pretrain", "model": TINY_CNN, "method": {"name": name},
         "data": {"train": FEW_DIGITS}, "hyperparameters": {"epochs": 1, "batch_size": 16}}
    )  # fmt: skip
    head = result.model["head"].train()
    features = torch.rand(32, 32)
    with torch.no_grad():
        assert torch.allclose(head(features), head(features * 10), atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm1d) and m.affine for m in head.modules())


def test_fit_head_classifies_the_training_features_from_raw_values():
    """Features of very different scales, one that never changes: the head, fitted on them
    standardised, gives the same logits from the raw features."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    centres = torch.randn(3, 5, generator=generator) * 3
    features = centres[labels] + torch.randn(60, 5, generator=generator)
    features = features * torch.tensor([1000.0, 1.0, 0.001, 1.0, 1.0])
    features[:, 3] = 7.0  # constant: a ReLU never active, say
    model = Network(nn.Identity(), nn.Identity(), nn.Linear(5, 3))
    examples, accuracy = fit_head(
        model, HEADS["classification"], Split(labels, features), 16, torch.device("cpu"), 0
    )
    with torch.no_grad():
        predicted = model(features).argmax(1)
    assert examples == 60 and accuracy == (predicted == labels).float().mean() > 0.95
    assert model.head.weight[:, 3].abs().max() == 0


def test_a_new_head_on_a_pretrained_backbone_starts_fitted_to_its_features():
    base = pretrained("contrastive")
    still = FAST | {"learning_rate": 1e-9}  # the head as it starts is the head at the end
    fitted, fitted_events = finetune(base, {}, still)
    random, random_events = finetune(base, {"head_init": "random"}, still)
    accuracy = [r.card.metrics["validation_accuracy"] for r in (fitted, random)]
    assert accuracy[0] > accuracy[1] + 0.3, accuracy
    assert any(m.startswith("head fitted") for m in logs(fitted_events))
    assert not any(m.startswith("head fitted") for m in logs(random_events))
    # From scratch, and a linear probe (which trains only the head), start from a random one.
    for events in (finetune(None, {})[1], finetune(base, {"freeze": "backbone"})[1]):
        assert not any(m.startswith("head fitted") for m in logs(events))


@pytest.mark.parametrize(
    ("architecture", "fitted"), [("cnn", True), ("transformer", True), ("hf_encoder", False)]
)
def test_auto_fits_the_head_only_on_a_backbone_pretrained_from_fresh_weights(architecture, fitted):
    """Not on an encoder pretrained elsewhere (MiniLM), even under a base model such as a
    SimCSE one: its full fine-tunes did better from a random head (bench.hf_text)."""
    spec = FinetuneSpec.model_validate(
        {"kind": "finetune", "base_model_id": "model_x", "data": {"train": FEW_DIGITS}}
    )
    base = LoadedModel({}, ModelCard(architecture=architecture, input_shape=[8], task="simcse"))
    with_base, without = (RunContext(spec, torch.device("cpu"), None, b) for b in (base, None))
    assert fits_head(with_base, Params(), head_reused=False) is fitted
    assert fits_head(with_base, Params(head_init="probe"), head_reused=False)
    assert not fits_head(with_base, Params(), head_reused=True)  # a classifier's own head
    assert not fits_head(without, Params(), head_reused=False)


def card(**metrics) -> ModelCard:
    return ModelCard(architecture="cnn", input_shape=[1, 28, 28], task="autoencoder",
                     metrics=metrics)  # fmt: skip


def test_doubts_name_what_a_base_card_tells_of_its_pretraining():
    healthy = {"initial_validation_loss": 1.0, "validation_loss": 0.3, "steps": 300}
    assert doubts(card(**healthy)) == []
    assert doubts(card(initial_validation_loss=1.0, validation_loss=0.3)) == []  # older card
    few = doubts(card(**healthy | {"steps": FEW_STEPS - 1}))
    assert len(few) == 1 and f"ran {FEW_STEPS - 1} optimizer steps" in few[0]
    unmoved = doubts(card(**healthy | {"validation_loss": 0.97}))
    assert len(unmoved) == 1 and "barely moved" in unmoved[0]
    solved = doubts(card(**healthy | {"initial_validation_loss": 7e-5, "validation_loss": 1e-6}))
    assert len(solved) == 1 and "solved already" in solved[0]
    classifier = ModelCard(architecture="cnn", input_shape=[1, 28, 28], task="classification",
                           metrics={"validation_loss": 0.2, "steps": 1})  # fmt: skip
    assert doubts(classifier) == []


def test_a_finetune_from_a_doubtful_base_says_so_in_its_events():
    base = pretrained("autoencoder", {"epochs": 1, "batch_size": 16})  # 5 steps
    assert base.card.metrics["steps"] == 5
    _, events = finetune(base, {}, {"epochs": 1})
    warnings = [m for m in logs(events) if m.startswith("warning:")]
    assert any("ran 5 optimizer steps" in m for m in warnings), warnings
    before = base.card.metrics["initial_validation_loss"]
    metrics = base.card.metrics | {"steps": 10 * FEW_STEPS, "validation_loss": before / 2}
    trusted = LoadedModel(base.state, base.card.model_copy(update={"metrics": metrics}))
    _, events = finetune(trusted, {}, {"epochs": 1})
    assert not [m for m in logs(events) if m.startswith("warning:")]
    _, events = finetune(trusted, {"head_init": "random"}, {"epochs": 1})
    assert [m for m in logs(events) if "`head_init: random`" in m]


def test_simcse_spans_are_parts_of_one_text_between_the_special_tokens():
    tokens = torch.zeros(3, 40, dtype=torch.long)
    tokens[0, :30] = torch.arange(10, 40)  # a long text
    tokens[1, :3] = torch.tensor([5, 6, 7])  # shorter than a span
    specials = ([101], [102])
    generator = torch.Generator().manual_seed(0)
    first, second = (simcse.draw_spans(tokens, 8, specials, 12, generator) for _ in "12")
    for spans in (first, second):
        assert spans[:, 0].tolist() == [101] * 3
        long = spans[0, 1:9]
        assert torch.equal(long, torch.arange(long[0], long[0] + 8))  # consecutive tokens
        assert spans[0, 9:].tolist() == [102, 0, 0]
        assert spans[1].tolist() == [101, 5, 6, 7, 102] + [0] * 7  # the whole of it
        assert spans[2].tolist() == [101, 102] + [0] * 10  # an empty text
    assert not torch.equal(first[0], second[0])  # two views of the long text, not one


def test_simcse_trains_on_spans_of_texts():
    result, _ = run(
        {"kind": "pretrain", "model": TINY_TRANSFORMER, "method": {"name": "simcse"},
         "data": {"train": {"dataset": "builtin:bbc-news", "per_class": 8}},
         "hyperparameters": {"epochs": 2, "batch_size": 8}}
    )  # fmt: skip
    metrics = result.card.metrics
    assert metrics["validation_loss"] < metrics["initial_validation_loss"]
    assert metrics["steps"] == 2 * 5


def test_the_pretraining_report_has_every_row_and_check():
    """bench.pretraining's report from made-up jobs: after a run of an hour, a report that
    fails would lose it."""
    seeds, jobs = [0, 1], {}
    for seed in seeds:
        for experiment in bench.SETTINGS:
            for method in bench.PRETEXTS:
                # Read back from the API, counts are floats.
                metrics = {"initial_validation_loss": 1.0, "validation_loss": 0.2, "steps": 300.0}
                jobs[(experiment, method, seed)] = {"metrics": metrics}
                for fraction in bench.FRACTIONS:
                    row = bench.finetune_row(method, fraction)
                    jobs[(experiment, row, seed)] = {"metrics": {"test_accuracy": 0.9}}
            for fraction in bench.FRACTIONS:
                jobs[(experiment, bench.finetune_row("scratch", fraction), seed)] = {
                    "metrics": {"test_accuracy": 0.85}
                }
        text = {"initial_val_perplexity": 2000.0, "val_perplexity": 200.0, "test_accuracy": 0.5}
        for row in ("causal_lm", "scratch", "causal_lm -> finetune"):
            jobs[("text", row, seed)] = {"metrics": text}
    specs = {key: {"kind": "finetune"} for key in jobs}
    text, checks = bench.report({"jobs": jobs, "specs": specs}, seeds, 60.0)
    assert "| contrastive -> finetune | 20% | 90.0 ± 0.0 | 90.0, 90.0 | +5.0 |" in text
    assert "| autoencoder | epochs 15 | 300 | 1.000 -> 0.200, 1.000 -> 0.200 |" in text
    failed = [name for name, ok in checks if not ok]
    # +5 passes every check but contrastive's +8 at 5% of the labels, and the text's +0.
    assert len(failed) == 2 and "gains >= 8" in failed[0], failed
    assert len(checks) == 2 * 2 * 2 + 2 + 2
