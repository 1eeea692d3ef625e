"""Transferability before training: LogME against the evidence it maximises, and the routes
in-process on Postgres, on models trained here and imported through the API."""

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from tests import files
from tests.conftest import new_tenant
from tests.test_api import assert_problem
from tests.test_core import train
from tests.test_registry import import_model, network, weights
from trainer.architectures import Network, build_trunk
from trainer.data import Split, load_dataset, select
from trainer.spec import DatasetSelection, JobSpec
from trainer.transferability import logme, logme_of_targets, target_columns

SMALL_CNN = {"architecture": "cnn", "params": {"channels": [8, 16], "hidden": 32}}
FRACTION, SEED = 0.2, 3


def one_hot_features(n: int, d: int, noise: float, seed: int, classes: int = 3):
    """Features that carry the class (a direction per class) plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    features = np.eye(classes)[labels] @ rng.normal(size=(classes, d))
    return features + noise * rng.normal(size=(n, d)), labels


def max_log_evidence(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME by its definition, with none of its algebra: for each class, the largest log
    density of the one-hot target under y ~ N(0, F F^T / alpha + I / beta), found by a
    general-purpose optimiser over (log alpha, log beta); per example, averaged."""
    n = len(features)
    evidences = []
    for label in np.unique(labels):
        target = (labels == label).astype(np.float64)

        def negative(log_ab, target=target):
            alpha, beta = np.exp(log_ab)
            cov = features @ features.T / alpha + np.eye(n) / beta
            return -multivariate_normal(np.zeros(n), cov).logpdf(target)

        options = {"xatol": 1e-9, "fatol": 1e-11, "maxiter": 4000}
        fits = [minimize(negative, start, method="Nelder-Mead", options=options)
                for start in ([0.0, 0.0], [3.0, 1.0], [-3.0, 2.0])]  # fmt: skip
        evidences.append(-min(fit.fun for fit in fits) / n)
    return float(np.mean(evidences))


@pytest.mark.parametrize(
    ("n", "d", "noise", "dead"),
    [(60, 8, 0.5, 0), (40, 6, 0.5, 0), (60, 10, 0.5, 3)],
    ids=["more-examples", "few-features", "dead-units"],
)
def test_logme_is_the_maximum_log_evidence(n, d, noise, dead):
    features, labels = one_hot_features(n, d, noise, seed=0)
    features[:, :dead] = 0.0
    assert logme(features, labels) == pytest.approx(max_log_evidence(features, labels), abs=1e-5)


def test_with_fewer_examples_than_features_logme_is_still_at_most_the_maximum_evidence():
    """Where the features can fit a target exactly, the residual the updates divide by is
    guarded (+1e-5, as the reference does), which stops a little short of the maximum; never
    above it. The reference code scores these features 1.88 where the maximum is -0.48 (its
    log|A| leaves out the null space's D - N eigenvalues, thuml/LogME#23)."""
    features, labels = one_hot_features(30, 50, 2.0, seed=0)
    maximum = max_log_evidence(features, labels)
    assert maximum - 1e-3 < logme(features, labels) <= maximum + 1e-9


def test_dead_units_leave_the_score_as_it_was():
    """Units that are always zero (dead ReLUs) add nothing a linear model can use. The
    reference code counts only nonzero singular values in log|A| and would reward them."""
    features, labels = one_hot_features(80, 6, 1.0, seed=1)
    with_dead = np.hstack([features, np.zeros((80, 20))])
    assert logme(with_dead, labels) == pytest.approx(logme(features, labels), rel=1e-9)


def test_features_that_separate_the_classes_score_higher_the_cleaner_they_are():
    scores = [logme(*one_hot_features(200, 16, noise, seed=2)) for noise in (0.1, 0.5, 2.0)]
    noise_only = np.random.default_rng(2).normal(size=(200, 16))
    chance = logme(noise_only, np.arange(200) % 3)
    assert scores[0] > scores[1] > scores[2] > chance, (scores, chance)


def test_the_score_ignores_example_order_and_what_the_classes_are_called():
    features, labels = one_hot_features(90, 12, 1.0, seed=3)
    order = np.random.default_rng(3).permutation(90)
    renamed = np.array([7, 2, 11])[labels]
    expected = logme(features, labels)
    assert logme(features[order], labels[order]) == pytest.approx(expected, rel=1e-9)
    assert logme(features, renamed) == pytest.approx(expected, rel=1e-9)


def test_a_single_class_or_features_that_are_not_finite_are_refused():
    features, labels = one_hot_features(30, 4, 1.0, seed=4)
    with pytest.raises(ValueError, match="two classes"):
        logme(features, np.zeros(30))
    features[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        logme(features, labels)


# The routes.


def card_of(network: Network) -> dict:
    return {
        **SMALL_CNN,
        "task": "classification",
        "input_shape": [1, 28, 28],
        "labels": [str(d) for d in range(10)],
        "normalization": {
            "mean": network.normalize.mean.flatten().tolist(),
            "std": network.normalize.std.flatten().tolist(),
        },
    }


@pytest.fixture(scope="module")
def trained() -> Network:
    job = {"kind": "finetune", "model": SMALL_CNN, "data": {"train": "builtin:digits"},
           "hyperparameters": {"epochs": 1, "seed": 0}}  # fmt: skip
    result, _events = train(TypeAdapter(JobSpec).validate_python(job))
    return result.model.eval()


@pytest.fixture(scope="module")
def untrained(trained) -> Network:
    """The same architecture and normalisation, random weights."""
    torch.manual_seed(0)
    normalization = {"mean": trained.normalize.mean.flatten().tolist(),
                     "std": trained.normalize.std.flatten().tolist()}  # fmt: skip
    normalize, backbone = build_trunk("cnn", SMALL_CNN["params"], (1, 28, 28), normalization)
    return Network(normalize, backbone, torch.nn.Linear(32, 10)).eval()


@pytest.fixture(scope="module")
def client(api_database):
    """A tenant of its own, so that "every model of the tenant" is this module's."""
    from app.main import app

    with TestClient(app, headers=new_tenant().headers) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def models(client, trained, untrained) -> dict[str, str]:
    ids = {}
    for name, net in (("trained", trained), ("untrained", untrained)):
        response = import_model(client, weights(net), card_of(net))
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]
    return ids


def scored_examples() -> Split:
    """The examples a job of SEED with FRACTION of the digits trains on."""
    train_split = load_dataset("builtin:digits").splits["train"]
    return select(train_split, DatasetSelection(dataset="d", fraction=FRACTION), SEED)


def expected_score(network: Network) -> float:
    """LogME of the network's features on those examples, computed here, outside the service."""
    examples = scored_examples()
    with torch.no_grad():
        return logme(network.features(examples.x).numpy(), examples.y.numpy())


def test_a_trained_model_scores_as_its_features_do_and_above_an_untrained_one(
    client, models, trained, untrained
):
    body = {"dataset": "builtin:digits", "fraction": FRACTION, "seed": SEED}
    answers = {}
    for name in ("trained", "untrained"):
        response = client.post(f"/v1/models/{models[name]}/transferability", json=body)
        assert response.status_code == 200, response.text
        answers[name] = response.json()
    examples = len(scored_examples())
    assert answers["trained"] == {
        "metric": "logme",
        "score": pytest.approx(expected_score(trained), abs=1e-4),
        "model_id": models["trained"],
        "dataset": "builtin:digits",
        "examples": examples,
        "feature_dim": 32,
    }
    assert examples == pytest.approx(FRACTION * 1257, abs=5)
    assert answers["untrained"]["score"] == pytest.approx(expected_score(untrained), abs=1e-4)
    assert answers["trained"]["score"] > answers["untrained"]["score"] + 0.05


def test_rank_models_orders_stored_models_and_a_fresh_architecture_on_the_same_examples(
    client, models
):
    body = {
        "model_ids": [models["untrained"], models["trained"]],
        "models": [SMALL_CNN],
        "fraction": FRACTION,
        "seed": SEED,
    }
    response = client.post("/v1/datasets/builtin:digits/rank-models", json=body)
    assert response.status_code == 200, response.text
    ranked = response.json()
    assert (ranked["metric"], ranked["dataset"]) == ("logme", "builtin:digits")
    assert ranked["examples"] == len(scored_examples())
    ranking = ranked["ranking"]
    assert [entry["rank"] for entry in ranking] == [1, 2, 3]
    assert [entry["score"] for entry in ranking] == sorted(
        (entry["score"] for entry in ranking), reverse=True
    )
    assert ranking[0]["model_id"] == models["trained"]
    fresh = next(entry for entry in ranking if entry["model_id"] is None)
    assert fresh["model"] == SMALL_CNN and fresh["architecture"] == "cnn"
    single = client.post(
        f"/v1/models/{models['trained']}/transferability",
        json={"dataset": "builtin:digits", "fraction": FRACTION, "seed": SEED},
    ).json()
    assert ranking[0]["score"] == single["score"]
    # A fresh architecture is drawn by the seed: the same seed, the same score.
    again = client.post("/v1/datasets/builtin:digits/rank-models", json=body).json()
    assert again["ranking"] == ranking


def test_without_model_ids_every_model_of_the_tenant_that_reads_the_dataset_is_ranked(
    client, models
):
    cancer = {"architecture": "mlp", "params": {}, "task": "features", "input_shape": [30]}
    torch.manual_seed(0)
    _normalize, backbone = build_trunk("mlp", {}, (30,), None)
    table = import_model(client, weights(torch.nn.ModuleDict({"backbone": backbone})), cancer)
    assert table.status_code == 201, table.text
    images = client.post("/v1/datasets/builtin:digits/rank-models", json={"fraction": 0.1})
    assert images.status_code == 200, images.text
    assert {e["model_id"] for e in images.json()["ranking"]} == set(models.values())
    tables = client.post("/v1/datasets/builtin:breast-cancer/rank-models", json={}).json()
    assert [e["model_id"] for e in tables["ranking"]] == [table.json()["id"]]


UNKNOWN_MODEL, UNKNOWN_DATASET = "model_" + "0" * 32, "ds_" + "0" * 32


def without(problem: dict, *ids: str) -> str:
    text = repr(problem)
    for id_ in ids:
        text = text.replace(id_, "<id>")
    return text


def test_another_tenants_models_and_datasets_answer_as_unknown_ones_do(client, models):
    upload = client.post(
        "/v1/datasets",
        files={"file": ("digits.npz", files.digits_npz(100))},
        data={"name": "digits-8x8", "task": "classification"},
    )
    assert upload.status_code == 201, upload.text
    theirs_ds, theirs_model = upload.json()["id"], models["trained"]
    body = {"dataset": "builtin:digits"}
    with TestClient(client.app, headers=new_tenant().headers) as stranger:
        pairs = [
            (
                stranger.post(f"/v1/models/{theirs_model}/transferability", json=body),
                stranger.post(f"/v1/models/{UNKNOWN_MODEL}/transferability", json=body),
                404,
            ),
            (
                stranger.post(f"/v1/datasets/{theirs_ds}/rank-models", json={}),
                stranger.post(f"/v1/datasets/{UNKNOWN_DATASET}/rank-models", json={}),
                404,
            ),
            (
                stranger.post(
                    "/v1/datasets/builtin:digits/rank-models", json={"model_ids": [theirs_model]}
                ),
                stranger.post(
                    "/v1/datasets/builtin:digits/rank-models", json={"model_ids": [UNKNOWN_MODEL]}
                ),
                422,
            ),
        ]
        mine = import_model(stranger, weights(network()))  # their own, of 8x8 images
        assert mine.status_code == 201, mine.text
        url = f"/v1/models/{mine.json()['id']}/transferability"
        pairs.append(
            (
                stranger.post(url, json={"dataset": theirs_ds}),
                stranger.post(url, json={"dataset": UNKNOWN_DATASET}),
                422,
            )
        )
        for theirs, unknown, status in pairs:
            theirs_problem = assert_problem(theirs, status)
            assert without(theirs_problem, theirs_ds, theirs_model) == without(
                assert_problem(unknown, status), UNKNOWN_DATASET, UNKNOWN_MODEL
            )
        fields = [assert_problem(t, s).get("errors", [{}])[0].get("field") for t, _, s in pairs]
        assert fields == [None, None, "model_ids.0", "dataset"]


def test_regression_and_multilabel_targets_score_as_the_features_predict_them():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    y = x[:, :2] @ np.array([[1.0], [2.0]]) + 0.3 * rng.normal(size=(200, 1))
    in_units = target_columns(1000 * y + 5, "regression")  # a target's units do not matter
    np.testing.assert_allclose(in_units, target_columns(y, "regression"), atol=1e-9)
    informative = logme_of_targets(x, in_units)
    assert informative > logme_of_targets(rng.normal(size=(200, 8)), in_units) + 0.5
    # A label no example has is not scored (any features fit an all-zero target).
    labels = (x[:, :2] > 0).astype(np.float64)
    never = np.hstack([labels, np.zeros((200, 1))])
    assert logme_of_targets(x, never) == pytest.approx(logme_of_targets(x, labels), rel=1e-12)
    with pytest.raises(ValueError, match="no target varies"):
        logme_of_targets(x, np.zeros((200, 2)))
    with pytest.raises(ValueError, match="token_classification"):
        target_columns(np.zeros((200, 5)), "token_classification")


def test_a_regression_dataset_ranks_architectures_and_token_tagging_is_refused(client):
    body = {"models": [{"architecture": "mlp"}, {"architecture": "mlp", "params": {"hidden": [8]}}]}
    response = client.post("/v1/datasets/builtin:diabetes/rank-models", json=body)
    assert response.status_code == 200, response.text
    ranked = response.json()
    assert ranked["examples"] == len(load_dataset("builtin:diabetes").splits["train"])
    assert len(ranked["ranking"]) == 2
    assert all(np.isfinite(entry["score"]) for entry in ranked["ranking"])
    tagged = client.post("/v1/datasets/builtin:bbc-entities/rank-models",
                         json={"models": [{"architecture": "transformer"}]})  # fmt: skip
    errors = assert_problem(tagged, 422)["errors"]
    assert [e["field"] for e in errors] == ["dataset_id"] and "token tagging" in errors[0][
        "message"
    ]


@pytest.fixture(scope="module")
def unlabelled(client) -> str:
    response = client.post(
        "/v1/datasets",
        files={"file": ("digits.npz", files.digits_npz(60))},
        data={"name": "unlabelled", "task": "pretraining"},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.mark.parametrize(
    ("body", "field", "phrase"),
    [
        ({"dataset": "builtin:digits", "fraction": 0}, "fraction", "greater than 0"),
        ({"dataset": "builtin:digits", "fraction": 1.5}, "fraction", "less than or equal to 1"),
        ({"dataset": "builtin:nothing"}, "dataset", "unknown dataset"),
        ({"dataset": "UNLABELLED"}, "dataset", "has no labels"),
        ({"dataset": "builtin:breast-cancer"}, "dataset", "reads image data"),
        ({"dataset": "builtin:digits-rgb"}, "dataset", "inputs of shape [1, 28, 28]"),
        ({"dataset": "builtin:bbc-news"}, "dataset", "builtin:bbc-news is text"),
        ({}, "dataset", "Field required"),
        ({"dataset": "builtin:digits", "surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_bad_scoring_requests_are_422_naming_the_field(
    client, models, unlabelled, body, field, phrase
):
    if body.get("dataset") == "UNLABELLED":
        body = {**body, "dataset": unlabelled}
    url = f"/v1/models/{models['trained']}/transferability"
    errors = assert_problem(client.post(url, json=body), 422)["errors"]
    assert [e["field"] for e in errors] == [field] and phrase in errors[0]["message"], errors


@pytest.mark.parametrize(
    ("body", "field", "phrase"),
    [
        ({"model_ids": []}, "model_ids", "at least 1 item"),
        ({"model_ids": [UNKNOWN_MODEL]}, "model_ids.0", "no model"),
        ({"models": [{"architecture": "vgg"}]}, "models.0.architecture", "unknown architecture"),
        ({"models": [{"architecture": "cnn", "params": {"hidden": 0}}]}, "models.0.params.hidden",
         "greater than or equal to 1"),
        ({"models": [{"architecture": "gru"}]}, "models.0.architecture", "does not read image"),
        ({"fraction": -0.1}, "fraction", "greater than 0"),
    ],
)  # fmt: skip
def test_bad_rankings_are_422_naming_the_field(client, body, field, phrase):
    response = client.post("/v1/datasets/builtin:digits/rank-models", json=body)
    errors = assert_problem(response, 422)["errors"]
    assert [e["field"] for e in errors] == [field] and phrase in errors[0]["message"], errors


def test_a_ranking_on_an_unlabelled_dataset_is_422_naming_it(client, unlabelled):
    response = client.post(f"/v1/datasets/{unlabelled}/rank-models", json={})
    errors = assert_problem(response, 422)["errors"]
    assert [e["field"] for e in errors] == ["dataset_id"] and "no labels" in errors[0]["message"]


def test_text_models_score_on_texts_minilm_and_a_fresh_transformer(client):
    upload = client.post(
        "/v1/datasets",
        files={"file": ("topics.jsonl", files.topics_jsonl(60))},
        data={"name": "topics", "task": "classification"},
    )
    assert upload.status_code == 201, upload.text
    minilm = client.post("/v1/models/import", data={"hf_model": "all-minilm-l6-v2"}).json()
    transformer = {"architecture": "transformer",
                   "params": {"d_model": 16, "layers": 1, "heads": 2, "max_length": 32,
                              "vocab_size": 200}}  # fmt: skip
    response = client.post(
        f"/v1/datasets/{upload.json()['id']}/rank-models",
        json={"model_ids": [minilm["id"]], "models": [transformer]},
    )
    assert response.status_code == 200, response.text
    ranked = response.json()
    assert ranked["examples"] == pytest.approx(0.7 * 60, abs=2)
    dims = {e["architecture"]: e["feature_dim"] for e in ranked["ranking"]}
    assert dims == {"hf_encoder": 384, "transformer": 16}
    # Two topics of a few repeated words: sentence embeddings tell them apart far better than
    # an untrained transformer's.
    assert ranked["ranking"][0]["model_id"] == minilm["id"]
