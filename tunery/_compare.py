"""What `tunery jobs compare` puts side by side: the jobs' final metrics, and the fields their
specs set differently. Plain data, shown as JSON or by `_render.comparison`."""

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tunery.types import Job


def _metric_order(name: str) -> tuple[int, str]:
    """`test_*` first, then `validation_*`, then the rest, each by name."""
    split = 0 if name.startswith("test_") else 1 if name.startswith("validation_") else 2
    return split, name


def metrics(jobs: Sequence[Job]) -> dict[str, list[float | None]]:
    """Each metric any of the jobs reported, with its value per job (None where one lacks it)."""
    names = sorted({name for job in jobs for name in job.metrics}, key=_metric_order)
    return {name: [job.metrics.get(name) for job in jobs] for name in names}


def flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A spec's leaves by dotted path (`hyperparameters.learning_rate`); a list is one leaf, as
    JSON text, so that two lists compare (and show) as a whole."""
    leaves: dict[str, Any] = {}
    for key, value in spec.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            leaves.update(flatten(value, f"{path}."))
        else:
            leaves[path] = json.dumps(value) if isinstance(value, list) else value
    return leaves


def differences(specs: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The dotted paths whose values are not the same in every spec, with each spec's value:
    None where a spec lacks the path (as a field left unset is null)."""
    flat = [flatten(spec) for spec in specs]
    paths = sorted({path for leaves in flat for path in leaves})
    rows = {path: [leaves.get(path) for leaves in flat] for path in paths}
    return {path: values for path, values in rows.items() if any(v != values[0] for v in values)}


def comparison(jobs: Sequence[Job]) -> dict[str, Any]:
    """`--json`'s document: the job ids, and per metric and per differing path, a value per job
    in the same order."""
    return {
        "jobs": [job.id for job in jobs],
        "metrics": metrics(jobs),
        "differences": differences([job.spec for job in jobs]),
    }
