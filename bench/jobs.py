"""What the result benches share: jobs submitted over HTTP and waited for, and the cells of
their tables (mean ± sample standard deviation over seeds, in %)."""

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.results import write_section
from bench.service import service


def hp(seed: int, **overrides) -> dict:
    return {"seed": seed, **overrides}


class Runner:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def submit(self, spec: dict) -> str:
        response = self.client.post("/v1/jobs", json=spec)
        response.raise_for_status()
        return response.json()["id"]

    def wait(self, job_ids: list[str]) -> list[dict]:
        pending, done = set(job_ids), {}
        while pending:
            for job_id in list(pending):
                job = self.client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    if job["status"] != "succeeded":
                        raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
                    done[job_id] = job
                    pending.discard(job_id)
            time.sleep(1)
        return [done[job_id] for job_id in job_ids]

    def run(self, specs: dict) -> dict:
        """Submits every spec at once (the worker runs them as it can), then waits; the jobs
        by the specs' keys."""
        jobs = self.wait([self.submit(spec) for spec in specs.values()])
        return dict(zip(specs, jobs, strict=True))


def values(jobs: dict, experiment: str, row: str, metric: str) -> list[float]:
    """A metric of the jobs keyed (experiment, row, seed), in seed order."""
    return [
        job["metrics"][metric]
        for (e, r, _s), job in sorted(jobs.items())
        if (e, r) == (experiment, row)
    ]


def cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    mean = statistics.mean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def per_seed(values: list[float]) -> str:
    return ", ".join(f"{v * 100:.1f}" for v in values)


def header(bench: str, seeds: list[int], elapsed_s: float, title: str) -> list[str]:
    return [f"# {title}", "",
            f"Written by `bench/{bench}.py` on {time.strftime('%Y-%m-%d')}: every number below "
            f"comes from jobs submitted to tunery's HTTP API, over seeds {seeds} "
            f"(mean ± sample standard deviation, in %; per-seed values after). "
            f"The whole run took {elapsed_s / 60:.1f} min on {os.cpu_count()} "
            "CPU cores.",
            f"Reproduce: `.venv/bin/python -m bench.{bench}` (about that long; it starts its own "
            "embedded service).", ""]  # fmt: skip


def checks_and_specs(checks: list[tuple[str, bool]], specs: dict, seed: int) -> list[str]:
    """The report's closing lines: each check, then the specs of one seed (a base model is
    named by the row that made it)."""
    lines = ["", "## Checks", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks]
    lines += ["", f"## The specs, for seed {seed}", ""]
    for (experiment, row, spec_seed), spec in sorted(specs.items()):
        if spec_seed == seed:
            shown = {k: v for k, v in spec.items() if k != "base_model_id"}
            if "base_model_id" in spec:
                shown["base_model_id"] = f"<the {row.split(' ->')[0]} model of this seed>"
            lines += [f"`{experiment}` / {row}:", "```json", json.dumps(shown), "```"]
    return lines


Experiments = Callable[[httpx.Client, list[int]], dict]
Report = Callable[[dict, list[int], float], tuple[str, list[tuple[str, bool]]]]


def bench_main(description: str, section: str, experiments: Experiments, report: Report) -> None:
    """A result bench's command line: run the experiments against a service (its own embedded
    one unless `--url`), rewrite its section of docs/RESULTS.md, print the report and checks."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", help="a running tunery; default: start an embedded one")
    parser.add_argument("--key", default=os.environ.get("TUNERY_API_KEY"), help="its API key")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"))
    args = parser.parse_args()
    started = time.monotonic()
    with service(args.url, args.key, concurrency=os.cpu_count() or 1) as client:
        results = experiments(client, args.seeds)
    text, checks = report(results, args.seeds, time.monotonic() - started)
    write_section(args.out, section, text)
    print(text)
    print("\n".join(f"{'PASS' if ok else 'FAIL'} {name}" for name, ok in checks))
