"""The training core on its own: no FastAPI, Celery, SQLAlchemy or database."""

import io
import itertools
import json
import signal
import subprocess
import sys

import pytest
import torch
from pydantic import TypeAdapter

from tests.child import lines_until
from trainer.architectures import Network, build_trunk
from trainer.artifact import load_predictor, read_card, save_model
from trainer.data import load_dataset
from trainer.events import EventSink
from trainer.methods import METHODS
from trainer.run import RunContext
from trainer.spec import JobSpec
from trainer.training import batch_order, batches_per_epoch
from trainer.validation import check_spec

DIGITS_CNN = {
    "kind": "finetune",
    "model": {"architecture": "cnn"},
    "data": {"train": "builtin:digits"},
}


def spec_of(**overrides):
    return TypeAdapter(JobSpec).validate_python({**DIGITS_CNN, **overrides})


def train(spec, device: str = "cpu") -> tuple:
    """`spec` trained in this process by its method, and the events it reported."""
    stream = io.StringIO()
    ctx = RunContext(spec=spec, device=torch.device(device), events=EventSink(stream))
    result = METHODS[spec.method.name].run(ctx)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    return result, events


def test_core_imports_no_web_queue_or_database_library():
    code = (
        "import sys, trainer.main, trainer.validation, trainer.launch;"
        "print(sorted({'fastapi','celery','sqlalchemy','app'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_builtin_digits_has_a_fixed_stratified_split_of_upsampled_images():
    dataset = load_dataset("builtin:digits")
    sizes = {name: len(split) for name, split in dataset.splits.items()}
    assert sizes == {"train": 1257, "validation": 180, "test": 360}
    assert dataset.splits["train"].x.shape[1:] == (1, 28, 28)
    assert dataset.labels == tuple(str(d) for d in range(10))
    assert torch.bincount(dataset.splits["test"].y).min() >= 35  # every class is in the test split
    train_rows = {tuple(r) for r in dataset.splits["train"].x.flatten(1)[:, ::50].tolist()}
    test_rows = {tuple(r) for r in dataset.splits["test"].x.flatten(1)[:, ::50].tolist()}
    assert len(train_rows & test_rows) < 5  # near-duplicate digits aside, the splits are disjoint


def test_seed_cnn_has_the_seed_layer_stack():
    normalize, backbone = build_trunk("cnn", {}, (1, 28, 28), {"mean": [0.0], "std": [1.0]})
    model = Network(normalize, backbone, torch.nn.Linear(backbone.feature_dim, 10))
    convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert convs == [32, 64, 64]
    assert linears == [64, 10]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_a_last_batch_of_one_example_joins_the_batch_before_it():
    generator = torch.Generator().manual_seed(0)
    for examples, batch_size, sizes in [(65, 64, [65]), (66, 64, [64, 2]), (128, 64, [64, 64]),
                                        (129, 64, [64, 65]), (1, 64, [1]),
                                        (5, 1, [1, 1, 1, 2])]:  # fmt: skip
        batches = batch_order(examples, batch_size, generator)
        assert [len(b) for b in batches] == sizes
        assert len(batches) == batches_per_epoch(examples, batch_size)
        assert sorted(torch.cat(batches).tolist()) == list(range(examples))


def test_cnn_with_batch_norm_normalises_every_block_and_trains_on_an_odd_last_batch():
    params = {"channels": [8, 8], "hidden": 16, "batch_norm": True}
    _, fresh = build_trunk("cnn", params, (3, 28, 28), {"mean": [0.0] * 3, "std": [1.0] * 3})
    for norm in (
        m for m in fresh.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ):
        # Untouched by the size probe at construction.
        assert norm.num_batches_tracked == 0 and bool((norm.running_var == 1).all())
    spec = spec_of(
        model={"architecture": "cnn", "params": params},
        data={"train": {"dataset": "builtin:digits", "per_class": 13}},  # 130 = 3 * 43 + 1
        hyperparameters={"epochs": 4, "batch_size": 43},
    )
    result, events = train(spec)
    norms = [type(m).__name__ for m in result.model.modules() if "BatchNorm" in type(m).__name__]
    assert norms == ["BatchNorm2d", "BatchNorm2d", "BatchNorm1d"]
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["step"] == progress[-1]["total_steps"] == 4 * 3
    assert result.card.metrics["test_accuracy"] > 0.3  # chance: 0.1


def test_supervised_cnn_on_digits_reaches_95_percent_held_out_accuracy():
    result, events = train(spec_of())
    assert result.card.metrics["test_accuracy"] >= 0.95
    per_epoch = [
        (e["name"], e["split"]) for e in events if e["type"] == "metric" and e["epoch"] == 1
    ]
    assert per_epoch == [
        ("loss", "train"), ("loss", "validation"), ("accuracy", "validation"),
        ("macro_f1", "validation"),
    ]  # fmt: skip
    tests = {
        e["name"]: e["value"] for e in events if e["type"] == "metric" and e["split"] == "test"
    }
    metrics = result.card.metrics
    assert tests["accuracy"] == metrics["test_accuracy"]  # the last, macro_f1, may be buffered
    # Ten classes of about the same size, predicted about as well: macro-F1 near accuracy.
    assert abs(metrics["test_macro_f1"] - metrics["test_accuracy"]) < 0.02


def test_training_is_reproducible_for_a_seed():
    spec = spec_of(hyperparameters={"epochs": 1, "seed": 7})
    first, _ = train(spec)
    second, _ = train(spec)
    other, _ = train(spec_of(hyperparameters={"epochs": 1, "seed": 8}))
    second_state = second.model.state_dict()
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, second_state[name]), name
    assert not torch.equal(first.model.head.weight, other.model.head.weight)


def test_artifact_round_trip_keeps_weights_card_and_predictions(tmp_path):
    result, _ = train(spec_of(hyperparameters={"epochs": 1}))
    path = tmp_path / "model.safetensors"
    save_model(result.model, result.card, path)
    loaded, loaded_card = load_predictor(path)
    assert loaded_card == result.card == read_card(path)
    assert loaded_card.normalization.mean == pytest.approx([4.878], abs=0.01)
    x = load_dataset("builtin:digits").splits["test"].x[:64]
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))
    # Nothing but safetensors: an 8-byte header length, a JSON header, then the raw tensors,
    # which end where the file does (no pickle or zip can hide before, between or after them).
    raw = path.read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_length])
    header.pop("__metadata__")
    data_length = max(end for entry in header.values() for end in entry["data_offsets"][1:])
    assert 8 + header_length + data_length == len(raw)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model": {"architecture": "vgg"}}, "model.architecture"),
        ({"model": {"architecture": "cnn", "params": {"channels": []}}}, "model.params.channels"),
        ({"model": {"architecture": "cnn", "params": {"widht": 3}}}, "model.params.widht"),
        ({"model": {"architecture": "cnn", "params": {"channels": [8] * 6}}}, "model.params"),
        ({"model": None}, "model"),
        ({"base_model_id": "model_x"}, "base_model_id"),
        ({"method": {"name": "dann"}}, "method.name"),
        (
            {"method": {"name": "supervised", "params": {"label_smoothing": 2}}},
            "method.params.label_smoothing",
        ),
        ({"data": {"train": "builtin:nope"}}, "data.train"),
        ({"data": {"train": "builtin:digits", "test": "s3://x"}}, "data.test"),
        ({"data": {"train": "builtin:bbc-news"}}, "model.architecture"),
        ({"model": {"architecture": "transformer"}}, "model.architecture"),
        ({"data": {"train": {"dataset": "builtin:nope", "fraction": 0.1}}}, "data.train"),
    ],
)
def test_check_spec_names_the_field_at_fault(overrides, field):
    issues = check_spec(spec_of(**overrides))
    assert [issue.field for issue in issues] == [field]


def test_check_spec_accepts_the_seed_job():
    assert check_spec(spec_of()) == []


def test_trainer_process_reports_a_deterministic_error_and_exits_1(tmp_path):
    run = {
        "job_id": "job_x",
        "model_id": "model_x",
        "base_model_path": None,
        "output_path": str(tmp_path / "m.safetensors"),
        "spec": {**DIGITS_CNN, "resources": {"device": "cuda"}},
    }
    (tmp_path / "run.json").write_text(json.dumps(run))
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = subprocess.run(
        [sys.executable, "-m", "trainer.main", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 1
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[-1]["type"] == "error"
    assert events[-1]["error_type"] == "device_unavailable"
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"kind": "pretrain", "model": {"architecture": "transformer"},
          "method": {"name": "contrastive"}, "data": {"train": "builtin:bbc-news"}}, "data.train"),
        ({"kind": "pretrain", "model": {"architecture": "cnn"},
          "method": {"name": "causal_lm"}, "data": {"train": "builtin:digits"}}, "data.train"),
        ({"kind": "pretrain", "model": {"architecture": "cnn"},
          "method": {"name": "supervised"}, "data": {"train": "builtin:digits"}}, "method.name"),
        ({"kind": "adapt", "model": {"architecture": "cnn"}, "method": {"name": "dann"},
          "data": {"source": "builtin:digits", "target": "builtin:digits-m"}}, "data.target"),
        ({"kind": "adapt", "model": {"architecture": "cnn"}, "method": {"name": "coral"},
          "data": {"source": "builtin:digits-rgb", "target": "builtin:digits-m",
                   "target_test": "builtin:breast-cancer"}}, "data.target_test"),
        ({"kind": "adapt", "model": {"architecture": "cnn"}, "method": {"name": "mcc"},
          "data": {"target": "builtin:digits-m"}}, "data.source"),
        ({"kind": "adapt", "model": {"architecture": "cnn"}, "method": {"name": "shot"},
          "data": {"target": "builtin:digits-m"}}, "base_model_id"),
        ({"kind": "adapt", "base_model_id": "model_x", "method": {"name": "shot"},
          "data": {"source": "builtin:digits-rgb", "target": "builtin:digits-m"}}, "data.source"),
    ],
)  # fmt: skip
def test_check_spec_refuses_models_methods_and_data_that_do_not_fit(spec, field):
    issues = check_spec(TypeAdapter(JobSpec).validate_python(spec))
    assert field in [issue.field for issue in issues]


def test_check_spec_accepts_every_kind():
    for spec in (
        {"kind": "pretrain", "model": {"architecture": "transformer"},
         "method": {"name": "causal_lm"}, "data": {"train": "builtin:bbc-news"}},
        {"kind": "pretrain", "model": {"architecture": "mlp"},
         "method": {"name": "autoencoder"}, "data": {"train": "builtin:breast-cancer"}},
        {"kind": "adapt", "model": {"architecture": "resnet"}, "method": {"name": "mmd"},
         "data": {"source": "builtin:digits-rgb", "target": "builtin:digits-m"}},
    ):  # fmt: skip
        assert check_spec(TypeAdapter(JobSpec).validate_python(spec)) == []


def test_a_method_registered_with_its_constraints_is_checked_by_them(monkeypatch):
    """What adding a method takes: its line in the registry, saying what it cannot do; the
    spec checks then refuse a job that asks for it, with the method's own reason."""
    from trainer.methods import Method, supervised

    def little_smoothing(params, architecture):
        too_much = params.get("label_smoothing", 0) > 0.2
        return [("method.params.label_smoothing", "pairs need <= 0.2")] if too_much else []

    pairwise = Method(
        "pairwise",
        "finetune",
        supervised.Params,
        supervised.run,
        frozenset({"image"}),
        labelled=("train",),
        single_process="its loss compares every pair of the whole batch",
        needs_left_to_right=True,
        check=little_smoothing,
    )
    monkeypatch.setitem(METHODS, "pairwise", pairwise)
    spec = spec_of(method={"name": "pairwise", "params": {"label_smoothing": 0.5}},
                   resources={"processes": 2})  # fmt: skip
    issues = {issue.field: issue.message for issue in check_spec(spec)}
    assert "every pair of the whole batch" in issues["resources.processes"]
    assert issues["method.params.label_smoothing"] == "pairs need <= 0.2"
    assert "reads both ways" not in issues.get("model.architecture", "")  # cnn is left to right
    gru = spec_of(model={"architecture": "gru"}, method={"name": "pairwise"},
                  data={"train": "builtin:bbc-news"})  # fmt: skip
    assert "data.train" in {issue.field for issue in check_spec(gru)}  # it reads images only


def test_log_every_steps_reports_the_step_loss_and_learning_rate_of_every_nth_step():
    hyperparameters = {"epochs": 2, "batch_size": 256, "learning_rate": 0.01}  # 5 steps an epoch
    every_2nd = spec_of(
        model={"architecture": "mlp"}, hyperparameters={**hyperparameters, "log_every_steps": 2}
    )
    stream = io.StringIO()
    ctx = RunContext(spec=every_2nd, device=torch.device("cpu"), events=EventSink(stream))
    METHODS["supervised"].run(ctx)
    ctx.events.flush()  # as the trainer process does as it exits
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    per_step = [e for e in events if e["type"] == "metric" and e["name"] != "loss"]
    per_step = [e for e in per_step if e["split"] == "train"]
    assert [(e["name"], e["step"], e["epoch"]) for e in per_step] == [
        (name, step, 1 if step <= 5 else 2) for step in (2, 4, 6, 8, 10)
        for name in ("step_loss", "learning_rate")
    ]  # fmt: skip
    assert all(e["value"] == 0.01 for e in per_step if e["name"] == "learning_rate")
    assert all(0 < e["value"] < 10 for e in per_step if e["name"] == "step_loss")

    _, unset = train(spec_of(model={"architecture": "mlp"}, hyperparameters=hyperparameters))
    names = {e["name"] for e in unset if e["type"] == "metric"}
    assert names == {"loss", "accuracy", "macro_f1"}


def test_event_sink_batches_metric_points_but_never_past_another_event_or_a_flush():
    stream = io.StringIO()
    events = EventSink(stream, batch_interval_s=60)
    events.metric("step_loss", "train", 1.0, 1, 1)  # the first: written at once
    events.metric("learning_rate", "train", 0.1, 1, 1)  # follows a point: waits
    events.metric("step_loss", "train", 0.9, 2, 1)
    assert [json.loads(line)["step"] for line in stream.getvalue().splitlines()] == [1]
    events.log("a later event of another type")  # the waiting points go first
    events.metric("step_loss", "train", 0.8, 3, 1)  # follows a log: written at once
    events.metric("learning_rate", "train", 0.1, 3, 1)  # waits for the flush at exit
    events.flush()
    written = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["type"], e.get("name"), e.get("step")) for e in written] == [
        ("metric", "step_loss", 1), ("metric", "learning_rate", 1), ("metric", "step_loss", 2),
        ("log", None, None), ("metric", "step_loss", 3), ("metric", "learning_rate", 3),
    ]  # fmt: skip


def test_a_trainer_stopped_by_sigterm_exits_75_with_every_point_it_reported(tmp_path):
    hyperparameters = {"epochs": 1000, "batch_size": 16, "log_every_steps": 1}
    spec = {**DIGITS_CNN, "model": {"architecture": "mlp"}, "hyperparameters": hyperparameters}
    run = {
        "job_id": "job_x",
        "model_id": "model_x",
        "base_model_path": None,
        "output_path": str(tmp_path / "m.safetensors"),
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "checkpoint_every_steps": 1_000_000,
        "spec": spec,
    }
    (tmp_path / "run.json").write_text(json.dumps(run))
    trainer = subprocess.Popen(
        [sys.executable, "-m", "trainer.main", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    count = itertools.count(1)
    lines = lines_until(  # training, points at every step
        trainer.stdout, lambda line: next(count) > 100 and json.loads(line)["type"] == "progress"
    )
    trainer.send_signal(signal.SIGTERM)
    rest, _ = trainer.communicate(timeout=60)
    lines += rest.splitlines()
    assert trainer.returncode == 75
    events = [json.loads(line) for line in lines]
    assert events[-1]["type"] == "log"
    assert events[-1]["message"].startswith("stopped at a checkpoint at step ")
    stopped_at = int(events[-1]["message"].rsplit(" ", 1)[1])
    steps = [e["step"] for e in events if e["type"] == "metric" and e["name"] == "step_loss"]
    assert steps == list(range(1, stopped_at + 1))
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)  # in their order


def test_channels_last_trains_the_same_model_in_another_memory_order():
    hyperparameters = {"epochs": 1, "batch_size": 64, "seed": 5}
    small = {"architecture": "cnn", "params": {"channels": [4, 8], "hidden": 16}}
    data = {"train": {"dataset": "builtin:digits", "fraction": 0.3}}
    plain, _ = train(spec_of(model=small, data=data, hyperparameters=hyperparameters))
    spec = spec_of(
        model=small, data=data, hyperparameters={**hyperparameters, "channels_last": True}
    )
    reordered, _ = train(spec)
    convolutions = [p for p in reordered.model.parameters() if p.dim() == 4]
    assert convolutions and all(
        p.is_contiguous(memory_format=torch.channels_last) for p in convolutions
    )
    assert not convolutions[-1].is_contiguous()  # more than one input channel: another order
    mine, theirs = reordered.model.state_dict(), plain.model.state_dict()
    assert all(torch.allclose(mine[name], theirs[name], atol=1e-5) for name in theirs)


def test_compile_trains_the_same_model_with_the_same_weight_names():
    hyperparameters = {"epochs": 1, "batch_size": 128, "seed": 2}
    # Without dropout: compiled code draws its random numbers differently.
    mlp = {"architecture": "mlp", "params": {"hidden": [32], "dropout": 0}}
    data = {"train": {"dataset": "builtin:digits", "fraction": 0.3}}
    eager, _ = train(spec_of(model=mlp, data=data, hyperparameters=hyperparameters))
    spec = spec_of(model=mlp, data=data, hyperparameters={**hyperparameters, "compile": True})
    compiled, _ = train(spec)
    assert compiled.model._compiled_call_impl is not None  # compiled in place
    mine, theirs = compiled.model.state_dict(), eager.model.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.allclose(mine[name], theirs[name], atol=1e-4) for name in theirs)
