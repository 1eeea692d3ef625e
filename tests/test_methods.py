"""Each architecture and method of the training core on tiny data (no service parts)."""

import io
import json

import pytest
import torch
import torch.nn.functional as F
from pydantic import TypeAdapter
from tokenizers import Tokenizer

from tests.tiny_lm import configure, save_tiny_causal_lm
from trainer.architectures import ARCHITECTURES, Network, build_trunk
from trainer.artifact import load_predictor, save_model
from trainer.augment import ColourAugmentation, colour_augment
from trainer.data import _digits_scan, _photographs, load_dataset, select, splits_for
from trainer.events import EventSink
from trainer.methods import METHODS
from trainer.methods.adaptation import ramp
from trainer.methods.contrastive import nt_xent
from trainer.methods.coral import coral_loss
from trainer.methods.dann import reverse_gradient
from trainer.methods.mcc import class_confusion
from trainer.methods.selection import dev_risk
from trainer.methods.self_training import pseudo_labels
from trainer.methods.shift import diagnose, domain_features, mmd_loss
from trainer.methods.shot import cluster_labels
from trainer.run import LoadedModel, RunContext
from trainer.spec import DatasetSelection, JobSpec
from trainer.text import encode
from trainer.training import lr_factor
from trainer.validation import check_spec

TINY_CNN = {"architecture": "cnn", "params": {"channels": [8, 16], "hidden": 32}}
FEW_DIGITS = {"dataset": "builtin:digits", "per_class": 8}
FAST = {"epochs": 4, "batch_size": 16}


def run(spec: dict, base: LoadedModel | None = None):
    parsed = TypeAdapter(JobSpec).validate_python(spec)
    stream = io.StringIO()
    ctx = RunContext(parsed, torch.device("cpu"), EventSink(stream), base)
    result = METHODS[parsed.method.name].run(ctx)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    return result, events


def series(events: list[dict], name: str, split: str) -> list[float]:
    return [
        e["value"]
        for e in events
        if e["type"] == "metric" and (e["name"], e["split"]) == (name, split)
    ]


def test_selection_is_stratified_reproducible_and_seeded():
    train = load_dataset("builtin:digits").splits["train"]
    five_percent = DatasetSelection(dataset="builtin:digits", fraction=0.05)
    first, again, other = (select(train, five_percent, seed) for seed in (0, 0, 1))
    counts = torch.bincount(first.y, minlength=10)
    expected = torch.tensor([round(0.05 * int(n)) for n in torch.bincount(train.y)])
    assert torch.equal(counts, expected.clamp_min(1))
    assert torch.equal(first.x, again.x)
    assert not torch.equal(first.x, other.x)
    per_class = select(train, DatasetSelection(dataset="builtin:digits", per_class=3), 0)
    assert torch.bincount(per_class.y).tolist() == [3] * 10


def test_a_validation_or_test_selection_is_kept_like_a_training_one():
    three = DatasetSelection(dataset="builtin:digits", per_class=3)
    _, train, validation, test = splits_for(three, three, None, 0)
    assert [len(train), len(validation)] == [30, 30]
    assert len(test) == len(load_dataset("builtin:digits").splits["test"])


def test_digits_m_is_a_deterministic_coloured_shift_of_the_same_digits():
    rgb, shifted = load_dataset("builtin:digits-rgb"), load_dataset("builtin:digits-m")
    assert rgb.input_shape == shifted.input_shape == (3, 28, 28)
    for split in ("train", "test"):
        assert torch.equal(rgb.splits[split].y, shifted.splits[split].y)
    x_rgb, x_m = rgb.splits["train"].x, shifted.splits["train"].x
    assert torch.equal(x_rgb[:, 0], x_rgb[:, 1])  # grey
    assert not torch.equal(x_m[:, 0], x_m[:, 1])  # colour
    assert (x_m - x_rgb).abs().mean() > 2.0  # a real shift: backgrounds are no longer blank


def test_digits_scan_is_a_deterministic_grey_shift_of_the_same_digits():
    rgb, scan = load_dataset("builtin:digits-rgb"), load_dataset("builtin:digits-scan")
    assert scan.input_shape == (3, 28, 28)
    assert torch.equal(rgb.splits["test"].y, scan.splits["test"].y)
    x_rgb, x_scan = rgb.splits["train"].x, scan.splits["train"].x
    assert torch.equal(x_scan[:, 0], x_scan[:, 2])  # grey, like the source
    assert torch.equal(x_scan, _digits_scan().splits["train"].x)  # the same on every load
    # Smaller digits: fewer bright pixels near the border than the source has.
    border = torch.ones(28, 28, dtype=torch.bool)
    border[5:23, 5:23] = False
    assert (x_scan[..., border] > 8).float().mean() < (x_rgb[..., border] > 8).float().mean()


def test_digits_m_backgrounds_come_from_many_photographs():
    photos = _photographs()
    assert len(photos) >= 20
    assert all(photo.ndim == 3 and photo.shape[2] == 3 for photo in photos)
    assert all(float(photo.min()) >= 0.0 and float(photo.max()) <= 1.0 for photo in photos)


@pytest.fixture
def text_params(monkeypatch, tmp_path) -> dict:
    """Params every text architecture builds from: a tiny causal LM directory for
    `hf_causal_lm`, which has no bundled base."""
    configure(monkeypatch, {"tiny": save_tiny_causal_lm(tmp_path / "tiny")})
    return {"max_length": 16}


def text_trunk(name: str, params: dict, length: int, vocab_size: int):
    extra = {"base": "tiny"} if name == "hf_causal_lm" else {}
    return build_trunk(name, params | extra | {"max_length": length}, [length], None, vocab_size)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_makes_features_of_its_declared_size(name, text_params):
    arch = ARCHITECTURES[name]
    if "text" in arch.modalities:
        normalize, backbone = text_trunk(name, text_params, 16, vocab_size=50)
        x = torch.randint(1, 50, (3, 16))
        assert backbone.forward_sequence(x).shape == (3, 16, backbone.feature_dim)
    else:
        shape = [1, 28, 28] if "image" in arch.modalities else [30]
        normalize, backbone = build_trunk(name, {}, shape, {"mean": [0.0], "std": [1.0]})
        x = torch.randn(3, *shape)
    assert backbone(normalize(x)).shape == (3, backbone.feature_dim)
    assert len(backbone.blocks()) >= 2


@pytest.mark.parametrize("name", ["transformer", "gru", "lstm", "hf_causal_lm"])
def test_sequence_models_are_causal(name, text_params):
    _, backbone = text_trunk(name, text_params, 12, vocab_size=40)
    backbone.eval()
    x = torch.randint(1, 40, (2, 12))
    changed = x.clone()
    changed[:, 8:] = torch.randint(1, 40, (2, 4))
    with torch.no_grad():
        before, after = backbone.forward_sequence(x), backbone.forward_sequence(changed)
    assert torch.allclose(before[:, :8], after[:, :8], atol=1e-5)
    assert not torch.allclose(before[:, 8:], after[:, 8:])


def test_gradient_reversal_reverses_and_scales_the_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    (reverse_gradient(x, 0.5) * 2).sum().backward()
    assert torch.equal(x.grad, torch.full((4, 3), -1.0))
    assert ramp(0.0) == 0.0
    assert 0.99 < ramp(1.0) < 1.0
    assert ramp(0.1) < ramp(0.5)


def test_domain_losses_are_zero_for_one_distribution_and_grow_with_a_shift():
    torch.manual_seed(0)
    a, b = torch.randn(64, 8), torch.randn(64, 8)
    for loss in (coral_loss, mmd_loss):
        same, shifted = loss(a, b), loss(a, b * 3 + 2)
        assert same < 0.1 * shifted
        assert loss(a, a).abs() < 1e-6


def test_class_confusion_is_low_for_confident_distinct_predictions_and_high_for_uniform():
    confident, uniform = torch.eye(4).repeat(4, 1) * 10, torch.zeros(16, 4)
    assert class_confusion(confident, 2.5) < 0.15 < 0.7 < class_confusion(uniform, 2.5) <= 0.75


def test_pseudo_labels_are_confident_target_predictions_aligned_with_the_source_classes():
    source = torch.tensor([[4.0, 0.0], [0.0, 4.0]])  # the source batch: both classes alike
    target = torch.tensor([[0.0, 5.0], [1.0, 0.0], [3.0, 0.0]])  # 0.99, 0.73, 0.95 confident
    labels, confident = pseudo_labels(source, target, threshold=0.95)
    # The target favours class 0 (mean 0.56); aligned, the third image falls to 0.94.
    assert labels.tolist() == [1, 0, 0] and confident.tolist() == [1.0, 0.0, 0.0]
    assert pseudo_labels(source, target, threshold=0.9)[1].tolist() == [1.0, 0.0, 1.0]


def test_nt_xent_prefers_matching_views():
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    assert nt_xent(z, z + 0.01 * torch.randn(16, 8), 0.2) < nt_xent(z, torch.randn(16, 8), 0.2)


def test_lr_schedule_warms_up_then_decays_to_zero():
    hp = TypeAdapter(JobSpec).validate_python(
        {"kind": "finetune", "model": TINY_CNN, "data": {"train": "builtin:digits"},
         "hyperparameters": {"warmup_steps": 10, "lr_schedule": "cosine"}}
    ).hyperparameters  # fmt: skip
    factors = [lr_factor(hp, step, 110) for step in range(110)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[9] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.5)
    assert factors[-1] < 0.01


@pytest.mark.parametrize("name", ["autoencoder", "contrastive"])
def test_image_pretraining_lowers_its_validation_loss(name):
    result, events = run(
        {"kind": "pretrain", "model": TINY_CNN, "method": {"name": name},
         "data": {"train": FEW_DIGITS}, "hyperparameters": FAST}
    )  # fmt: skip
    metrics = result.card.metrics
    assert metrics["validation_loss"] < metrics["initial_validation_loss"]
    assert result.card.task == name
    assert set(result.model.state_dict()) >= {"head.1.weight", "backbone.dense.1.weight"}
    assert series(events, "loss", "validation")[0] == metrics["initial_validation_loss"]


def test_autoencoder_pretrains_tables_too():
    result, _ = run(
        {"kind": "pretrain", "model": {"architecture": "mlp"}, "method": {"name": "autoencoder"},
         "data": {"train": "builtin:breast-cancer"}, "hyperparameters": FAST}
    )  # fmt: skip
    assert result.card.metrics["validation_loss"] < result.card.metrics["initial_validation_loss"]


def test_finetuning_a_pretrained_backbone_keeps_it_frozen_when_asked():
    pretrained, _ = run(
        {"kind": "pretrain", "model": TINY_CNN, "method": {"name": "autoencoder"},
         "data": {"train": FEW_DIGITS}, "hyperparameters": {"epochs": 1}}
    )  # fmt: skip
    base = LoadedModel(pretrained.model.state_dict(), pretrained.card)
    probe, _ = run(
        {"kind": "finetune", "base_model_id": "model_x",
         "method": {"name": "supervised", "params": {"freeze": "backbone"}},
         "data": {"train": FEW_DIGITS}, "hyperparameters": FAST}, base
    )  # fmt: skip
    partial, _ = run(
        {"kind": "finetune", "base_model_id": "model_x",
         "method": {"name": "supervised", "params": {"freeze": "partial", "trainable_blocks": 1}},
         "data": {"train": FEW_DIGITS}, "hyperparameters": FAST}, base
    )  # fmt: skip
    for name, before in base.state.items():
        if name.startswith("backbone."):
            assert torch.equal(probe.model.state_dict()[name], before), name
    changed = {
        name.split(".")[1]
        for name, before in base.state.items()
        if name.startswith("backbone.")
        and not torch.equal(partial.model.state_dict()[name], before)
    }
    assert changed == {"dense"}  # the top block only
    assert probe.card.labels == [str(d) for d in range(10)]


def test_early_stopping_restores_the_best_epoch():
    result, events = run(
        {"kind": "finetune", "model": TINY_CNN, "data": {"train": FEW_DIGITS},
         "hyperparameters": {"epochs": 40, "batch_size": 16, "learning_rate": 0.01,
                             "early_stopping_patience": 2}}
    )  # fmt: skip
    accuracy = series(events, "accuracy", "validation")
    metrics = result.card.metrics
    assert len(accuracy) < 40
    assert metrics["validation_accuracy"] == max(accuracy)
    assert metrics["best_epoch"] == accuracy.index(max(accuracy)) + 1


@pytest.mark.parametrize("name", ["source_only", "dann", "coral", "mmd", "mcc", "self_training"])
def test_adaptation_methods_report_target_and_source_accuracy(name):
    result, events = run(
        {"kind": "adapt", "model": TINY_CNN,
         "method": {"name": name, "params": {} if name == "source_only" else {"weight": 0.1}},
         "data": {"source": {"dataset": "builtin:digits-rgb", "per_class": 8},
                  "target": {"dataset": "builtin:digits-m", "per_class": 8}},
         "hyperparameters": FAST}
    )  # fmt: skip
    metrics = result.card.metrics
    assert 0 <= metrics["test_accuracy"] <= 1 and 0 <= metrics["source_test_accuracy"] <= 1
    assert metrics["source_test_accuracy"] > 0.2  # it learned the labelled source
    assert series(events, "accuracy", "test") == [metrics["test_accuracy"]]
    assert not any(key.startswith("critic") for key in result.model.state_dict())


ADAPT_DIGITS = {
    "source": {"dataset": "builtin:digits-rgb", "per_class": 8},
    "target": {"dataset": "builtin:digits-m", "per_class": 8},
}
TINY_CNN_BN = {**TINY_CNN, "params": {**TINY_CNN["params"], "batch_norm": True}}


def adapt_bn(method: str, params: dict):
    return run(
        {"kind": "adapt", "model": TINY_CNN_BN, "method": {"name": method, "params": params},
         "data": ADAPT_DIGITS, "hyperparameters": FAST}
    )  # fmt: skip


@pytest.mark.parametrize("adabn", [False, True])
def test_an_adapt_method_at_weight_zero_trains_exactly_the_baseline(adabn):
    """The same normalisation for every method: the target pass neither moves BatchNorm's
    running statistics nor anything else, so a gain over source_only is the domain loss's."""
    baseline, _ = adapt_bn("source_only", {"adabn": adabn})
    aligned, _ = adapt_bn("mmd", {"adabn": adabn, "weight": 0.0})
    kept, trained = baseline.model.state_dict(), aligned.model.state_dict()
    assert kept.keys() == trained.keys()
    assert all(torch.equal(kept[name], trained[name]) for name in kept)
    assert baseline.card.metrics == aligned.card.metrics


def test_adabn_normalises_the_kept_model_with_the_target_statistics():
    with_adabn, events = adapt_bn("source_only", {})
    without, _ = adapt_bn("source_only", {"adabn": False})
    metrics = with_adabn.card.metrics
    assert metrics["test_accuracy_without_adabn"] == without.card.metrics["test_accuracy"]
    assert "test_accuracy_without_adabn" not in without.card.metrics
    assert any("AdaBN" in e.get("message", "") for e in events)
    # The first BatchNorm's running mean: its inputs' mean over the target training split
    # (80 images in 5 batches of 16), not the source's.
    model = with_adabn.model.eval()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    first.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    target = select(
        load_dataset("builtin:digits-m").splits["train"],
        DatasetSelection(**ADAPT_DIGITS["target"]),
        0,
    )
    with torch.no_grad():
        model(target.x)
    assert torch.allclose(first.running_mean, seen[0].mean(dim=(0, 2, 3)), atol=1e-5)
    source_mean = without.model.state_dict()
    name = next(k for k in source_mean if k.endswith("running_mean"))
    assert not torch.allclose(source_mean[name], first.running_mean, atol=1e-3)


def test_shift_diagnostics_observe_without_changing_the_network():
    dataset = load_dataset("builtin:digits-m")
    normalize, backbone = build_trunk("cnn", TINY_CNN_BN["params"], dataset.input_shape, None)
    model = Network(normalize, backbone, torch.nn.Linear(backbone.feature_dim, 10)).train()
    source = load_dataset("builtin:digits-rgb").splits["train"].x[:100]
    target = dataset.splits["train"].x[:65]  # batches of 33 and 32, never one of a single image
    kept = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    found = diagnose(model, source, target, batch_size=64, device=torch.device("cpu"))
    assert model.training and all(torch.equal(kept[n], t) for n, t in model.state_dict().items())
    assert found["feature_mmd"] > 0.01
    assert 0.1 <= found["confidence"] <= 1 and 0 <= found["class_balance"] <= 1
    same = diagnose(model, source, source, batch_size=64, device=torch.device("cpu"))
    assert same["feature_mmd"] < 1e-6 < found["feature_mmd"]


def test_shot_adapts_a_trained_classifier_to_the_target_without_the_source():
    """Source-free: the base classifier's head stays as trained, the trunk moves, the job reads
    no source data and reports the target accuracy before and after; the pseudo-labels are the
    target's own clusters."""
    source_model, _ = adapt_bn("source_only", {})
    base = LoadedModel(source_model.model.state_dict(), source_model.card)
    spec = {"kind": "adapt", "base_model_id": "model_x", "method": {"name": "shot"},
            "data": {"target": ADAPT_DIGITS["target"]}, "hyperparameters": FAST}  # fmt: skip
    assert check_spec(TypeAdapter(JobSpec).validate_python(spec), base.card) == []
    adapted, events = run(spec, base)
    before, after = base.state, adapted.model.state_dict()
    assert torch.equal(before["head.weight"], after["head.weight"])
    moved = [name for name in before if name.startswith("backbone.") and "weight" in name]
    assert any(not torch.equal(before[name], after[name]) for name in moved)
    metrics = adapted.card.metrics
    assert {"test_accuracy", "test_accuracy_before", "validation_loss"} <= set(metrics)
    assert "source_test_accuracy" not in metrics
    assert len(series(events, "loss", "validation")) == FAST["epochs"]
    two_blobs = torch.cat([torch.randn(20, 4) + 5, torch.randn(20, 4) - 5])
    wrong_at_first = torch.zeros(40, 2)
    wrong_at_first[:, 0] = torch.linspace(1, 0, 40)  # leans to class 0 throughout
    labels = cluster_labels(two_blobs, wrong_at_first)
    assert labels[:20].unique().numel() == 1 and labels[20:].unique().numel() == 1
    assert labels[0] != labels[-1]


def test_dev_risk_weights_the_source_validation_loss_towards_the_target():
    """Without a shift the domain classifier cannot tell the domains apart and DEV's risk is
    the plain source validation loss; with a target of zeros only, it is about the loss on
    the validation zeros. (A network without BatchNorm: with it, each domain is normalised with
    its own statistics, which would hide a shift of the mean such as this one.)"""
    spec = {"kind": "adapt", "model": TINY_CNN, "method": {"name": "source_only"},
            "data": ADAPT_DIGITS, "hyperparameters": FAST}  # fmt: skip
    model = run(spec)[0].model.train()
    source = load_dataset("builtin:digits-rgb").splits
    validation, train, cpu = source["validation"], source["train"], torch.device("cpu")
    with torch.no_grad():
        features = domain_features(model, validation.x, 64, cpu)
        losses = F.cross_entropy(model.head(features), validation.y, reduction="none")
    zeros = validation.y == 0
    assert abs(losses[zeros].mean() - losses.mean()) > 0.2  # the two cases differ
    same = dev_risk(model, train.x[:300], (validation.x, validation.y), train.x[300:600], 64, cpu)
    assert same == pytest.approx(losses.mean().item(), rel=0.1)
    only_zeros = train.x[train.y == 0]
    shifted = dev_risk(model, train.x[:300], (validation.x, validation.y), only_zeros, 64, cpu)
    assert abs(shifted - losses[zeros].mean().item()) < abs(shifted - losses.mean().item())


def test_an_adapt_job_reports_the_shift_before_training_and_after_every_epoch():
    result, events = adapt_bn("mcc", {})
    for name in ("feature_mmd", "confidence", "class_balance"):
        points = [
            e
            for e in events
            if e["type"] == "metric" and (e["name"], e["split"]) == (name, "target")
        ]
        assert [p["epoch"] for p in points] == list(range(FAST["epochs"] + 1)), name
    metrics, distances = result.card.metrics, series(events, "feature_mmd", "target")
    assert metrics["dev_risk"] > 0
    assert (metrics["feature_mmd_before"], metrics["feature_mmd_after"]) == (
        distances[0],
        distances[-1],
    )


TINY_TRANSFORMER = {
    "architecture": "transformer",
    "params": {"d_model": 32, "layers": 1, "heads": 2, "max_length": 32, "vocab_size": 300},
}
FEW_TEXTS = {"dataset": "builtin:bbc-news", "per_class": 6}


def test_causal_lm_lowers_perplexity_and_keeps_its_tokenizer(tmp_path):
    result, _ = run(
        {"kind": "pretrain", "model": TINY_TRANSFORMER, "method": {"name": "causal_lm"},
         "data": {"train": FEW_TEXTS}, "hyperparameters": {"epochs": 2, "batch_size": 16}}
    )  # fmt: skip
    metrics = result.card.metrics
    assert metrics["val_perplexity"] < metrics["initial_val_perplexity"]
    assert metrics["initial_val_perplexity"] > 100  # an untrained model guesses among ~300
    tokenizer = Tokenizer.from_str(result.card.tokenizer)
    assert tokenizer.token_to_id("[PAD]") == 0
    assert result.card.vocab_size == tokenizer.get_vocab_size() <= 300
    assert result.model.state_dict()["head.weight"].shape == (result.card.vocab_size, 32)


def test_text_classifier_fine_tuned_from_a_language_model_predicts_strings(tmp_path):
    pretrained, _ = run(
        {"kind": "pretrain", "model": TINY_TRANSFORMER, "method": {"name": "causal_lm"},
         "data": {"train": FEW_TEXTS}, "hyperparameters": {"epochs": 1}}
    )  # fmt: skip
    base = LoadedModel(pretrained.model.state_dict(), pretrained.card)
    tuned, _ = run(
        {"kind": "finetune", "base_model_id": "model_x", "data": {"train": FEW_TEXTS},
         "hyperparameters": {"epochs": 2, "batch_size": 8}}, base
    )  # fmt: skip
    assert tuned.card.tokenizer == pretrained.card.tokenizer
    assert tuned.card.labels == ["business", "entertainment", "politics", "sports", "tech"]
    path = tmp_path / "model.safetensors"
    save_model(tuned.model, tuned.card, path)
    classifier, card = load_predictor(path)
    tokens = encode(Tokenizer.from_str(card.tokenizer), ["Shares fell on Wall Street"], 32)
    assert classifier(tokens).shape == (1, 5)


def test_colour_augmentation_is_seeded_keeps_the_scale_and_changes_the_images():
    x = load_dataset("builtin:digits-m").splits["train"].x[:32]
    params = ColourAugmentation()
    first = colour_augment(x, params, torch.Generator().manual_seed(3))
    again = colour_augment(x, params, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert first.min() >= x.min() and first.max() <= x.max()
    changed = (first - x).abs().flatten(1).mean(1) > 0.1
    assert changed.float().mean() > 0.5
    still = ColourAugmentation(ops=("identity",), cutout=0.0)
    assert torch.allclose(colour_augment(x, still, torch.Generator()), x, atol=1e-5)
    inverted = colour_augment(
        x, ColourAugmentation(ops=("invert",), ops_per_image=1, cutout=0.0), None
    )
    assert torch.allclose(inverted, x.min() + x.max() - x, atol=1e-5)
