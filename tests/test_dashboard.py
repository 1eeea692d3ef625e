"""The web dashboard at /ui, in Debian's Chromium driven by Playwright, against a real stack: a
uvicorn API server and a Celery worker on Postgres and Redis.

Every test fails on a console error, an uncaught exception or a Content-Security-Policy
violation in the page, and on the API key showing up in any URL the page requested.
Screenshots of each page are kept in test-artifacts/dashboard/.
"""

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests import files
from tests.stack import postgres_redis_stack
from tests.test_core import DIGITS_CNN
from tests.test_e2e import finished
from trainer.spec import lower_is_better

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

CHROMIUM = Path("/usr/bin/chromium")
# What Chromium needs here: no sandbox in a container, no GPU, and nothing fetched from outside.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
TINY_CNN = {"architecture": "cnn", "params": {"channels": [8, 16], "hidden": 32}}
# Long enough to watch its curves grow: one point of train and validation loss per epoch.
WATCHED_EPOCHS = 10
WATCHED = {
    **DIGITS_CNN,
    "name": "watched",
    "hyperparameters": {"epochs": WATCHED_EPOCHS, "batch_size": 32},
}
# Records a CSP violation as a console error, which the page fixture then reports.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) =>
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI}`));
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with postgres_redis_stack(tmp_path_factory.mktemp("dashboard"), "ui", concurrency=2) as stack:
        yield stack


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: `make test` installs Debian's chromium")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Page:
    """A browser tab, and what went wrong in it."""

    tab: object
    key: str
    problems: list[str] = field(default_factory=list)
    requests: list = field(default_factory=list)

    def check(self, allowed: tuple[str, ...] = ()) -> None:
        """No console error (but those containing an `allowed` text), no exception, no CSP
        violation; the key in no URL, and every API call with a Bearer key."""
        unexpected = [p for p in self.problems if not any(a in p for a in allowed)]
        assert not unexpected, unexpected
        assert not [r.url for r in self.requests if self.key in r.url]
        for request in [r for r in self.requests if "/v1/" in r.url]:
            assert request.all_headers().get("authorization", "").startswith("Bearer "), request

    def screenshot(self, name: str) -> None:
        self.tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(
        base_url=stack.base_url, viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    context.add_init_script(CSP_LISTENER)
    tab = context.new_page()
    watched = Page(tab, stack.key)
    tab.on(
        "console",
        lambda m: watched.problems.append(f"console: {m.text}") if m.type == "error" else None,
    )
    tab.on("pageerror", lambda error: watched.problems.append(f"exception: {error}"))
    tab.on("request", lambda request: watched.requests.append(request))
    yield watched
    context.close()


def sign_in(page: Page, key: str | None = None, at: str = "/ui/") -> None:
    page.tab.goto(at)
    page.tab.get_by_role("textbox", name="API key").fill(key or page.key)
    page.tab.get_by_role("button", name="Use this key").click()


def submit(stack, spec: dict) -> dict:
    with stack.client() as client:
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 201, response.text
        return response.json()


def wait_for_job(stack, job_id: str, timeout: float = 120, done=finished) -> dict:
    deadline = time.monotonic() + timeout
    with stack.client() as client:
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if done(job):
                return job
            time.sleep(0.3)
    raise AssertionError(f"job {job_id} stuck: {job}\n{stack.logs()}")


def status_of(tab):
    return tab.locator("#job-status .badge")


def test_ui_pages_have_a_strict_csp_and_v1_keeps_its_own(stack):
    page = httpx.get(f"{stack.base_url}/ui/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "connect-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(f"{stack.base_url}/ui/app.js")
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert script.headers["content-security-policy"] == csp
    api = httpx.get(f"{stack.base_url}/v1/jobs")
    assert api.status_code == 401
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_the_api_docs_and_redoc_work_without_internet(page, stack):
    """Swagger UI at /docs and ReDoc at /redoc, with every request to another host refused:
    their assets come from the service, and run under the pages' CSP."""
    elsewhere: list[str] = []

    def this_service_only(route) -> None:
        if route.request.url.startswith(stack.base_url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort("internetdisconnected")

    tab = page.tab
    tab.route("**/*", this_service_only)
    tab.goto("/docs")
    expect(tab.locator('.opblock-summary-path[data-path="/v1/jobs"]').first).to_be_visible()
    page.screenshot("docs-swagger-ui")
    tab.goto("/redoc")
    expect(tab.get_by_role("heading", name=re.compile(r"^tunery"), level=1)).to_be_visible()
    page.screenshot("docs-redoc")
    assert not elsewhere
    csp = httpx.get(f"{stack.base_url}/docs").headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in csp and "unsafe-eval" not in csp
    # ReDoc's sidebar always asks its CDN for a logo: the CSP refuses it, and ReDoc then hides it.
    page.check(allowed=("https://cdn.redoc.ly/redoc/logo-mini.svg",))


def test_a_wrong_key_brings_back_the_key_form(page):
    tab = page.tab
    tab.goto("/ui/")
    form = tab.locator("#key-panel")
    expect(form).to_be_visible()
    page.screenshot("key-form")

    sign_in(page, "tunery_not-a-key")
    expect(form).to_be_visible()
    expect(tab.locator("#key-message")).to_contain_text("refused")
    assert tab.evaluate("sessionStorage.getItem('tunery.apiKey')") is None

    sign_in(page)
    expect(tab.get_by_role("heading", name="Jobs", level=1)).to_be_visible()
    expect(form).to_be_hidden()
    assert tab.evaluate("sessionStorage.getItem('tunery.apiKey')") == page.key
    assert tab.evaluate("localStorage.length") == 0

    # The key goes stale (revoked, say): the next call is refused and the form comes back.
    tab.evaluate("sessionStorage.setItem('tunery.apiKey', 'tunery_revoked')")
    tab.get_by_role("button", name="Refresh now").click()
    expect(form).to_be_visible()
    expect(tab.locator("#key-message")).to_contain_text("refused")
    page.screenshot("key-form-refused")
    page.check(allowed=("status of 401",))


def test_a_job_page_draws_its_curves_live_until_it_succeeds(page, stack):
    job = submit(stack, WATCHED)
    tab = page.tab
    sign_in(page, at=f"/ui/#/jobs/{job['id']}")
    expect(tab.get_by_role("heading", name="watched")).to_be_visible()

    # (status shown, loss points drawn) every 0.2 s until the job is final.
    seen: list[tuple[str, int]] = []
    shot = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, points = tab.evaluate(
            """() => [document.getElementById("view").dataset.status ?? "",
                      Number(document.querySelector("figure[data-metric=loss]")
                             ?.dataset.points ?? 0)]"""
        )
        seen.append((status, points))
        if status == "running" and points >= 4 and not shot:
            page.screenshot("job-running")
            shot = True
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert seen[-1][0] == "succeeded", (seen, stack.logs())
    while_running = sorted({points for status, points in seen if status == "running" and points})
    assert len(while_running) >= 2, seen  # the chart grew while the job ran
    counts = [points for _, points in seen]
    assert counts == sorted(counts), seen  # and never lost a point

    expect(status_of(tab)).to_have_text("succeeded")
    expect(tab.locator("#stream-state")).to_have_attribute("data-state", "ended")
    # The chart holds exactly the job's loss points: train and validation for every epoch.
    series = tab.evaluate(
        """() => Object.fromEntries(Chart.getChart(
                document.querySelector("figure[data-metric=loss] canvas")
            ).data.datasets.map((d) => [d.label, d.data.map((p) => p.y)]))"""
    )
    with stack.client() as client:
        points = client.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]
        final = client.get(f"/v1/jobs/{job['id']}").json()
    for split in ("train", "validation"):
        expected = [p["value"] for p in points if (p["name"], p["split"]) == ("loss", split)]
        assert series[split] == pytest.approx(expected)
        assert len(expected) == WATCHED_EPOCHS
    expect(tab.locator("figure[data-metric=accuracy]")).to_be_visible()
    expect(tab.locator("#log li").first).to_be_visible()
    expect(tab.locator("#events")).to_contain_text("succeeded")
    expect(tab.locator("#cancel-job")).to_be_hidden()
    page.screenshot("job-succeeded")

    tab.locator("#result-model a").click()
    expect(tab.locator("#lineage")).to_be_visible()
    assert tab.url.endswith(f"#/models/{final['result_model_id']}")
    page.check()


def test_the_cancel_button_cancels_a_running_job(page, stack):
    job = submit(stack, {**WATCHED, "name": "to-cancel", "hyperparameters": {"epochs": 2000}})
    tab = page.tab
    sign_in(page, at=f"/ui/#/jobs/{job['id']}")
    cancel = tab.get_by_role("button", name="Cancel job")
    expect(cancel).to_be_visible()
    expect(status_of(tab)).to_have_text("running", timeout=30_000)
    page.screenshot("job-to-cancel")
    cancel.click()
    expect(status_of(tab)).to_have_text("cancelled")
    expect(cancel).to_be_hidden()
    expect(tab.locator("#stream-state")).to_have_attribute("data-state", "ended")
    with stack.client() as client:
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    page.screenshot("job-cancelled")
    page.check()


def test_a_job_paused_from_its_page_lists_its_checkpoint_and_a_new_job_starts_from_it(page, stack):
    job = submit(stack, {**WATCHED, "name": "to-pause", "hyperparameters": {"epochs": 2000}})
    tab = page.tab
    sign_in(page, at=f"/ui/#/jobs/{job['id']}")
    expect(status_of(tab)).to_have_text("running", timeout=30_000)
    # An epoch's end: its checkpoint, with its figures.
    wait_for_job(stack, job["id"], done=lambda j: j["progress"]["epoch"] >= 2)
    tab.get_by_role("button", name="Pause").click()
    expect(status_of(tab)).to_have_text("paused", timeout=30_000)
    resume = tab.get_by_role("button", name="Resume")
    expect(resume).to_be_visible()
    expect(tab.get_by_role("button", name="Pause")).to_be_hidden()
    rows = tab.locator("#job-checkpoints tbody tr")
    expect(rows).to_have_count(1)  # the default policy keeps what resume needs
    with stack.client() as client:
        [kept] = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    expect(rows.first).to_have_attribute("data-checkpoint", kept["id"])
    page.screenshot("job-paused")

    rows.first.get_by_role("link", name="Start a job from it").click()
    expect(tab.locator("#view")).to_have_attribute("data-loaded", "true")
    assert spec_shown(tab)["base_checkpoint_id"] == kept["id"]
    control(tab, "name").fill("from-a-checkpoint")
    tab.get_by_role("button", name="Create job").click()
    expect(tab.get_by_role("heading", name="from-a-checkpoint", level=1)).to_be_visible()
    started_id = tab.url.rsplit("/", 1)[1]
    expect(tab.locator("#base-checkpoint")).to_contain_text(f"checkpoint {kept['id']} of")
    expect(tab.locator("#base-checkpoint a")).to_have_attribute("href", f"#/jobs/{job['id']}")
    with stack.client() as client:
        started = client.get(f"/v1/jobs/{started_id}").json()
        assert started["spec"]["base_checkpoint_id"] == kept["id"]
        for job_id in (job["id"], started_id):  # neither need run on
            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    page.check()


@pytest.fixture(scope="module")
def tuned(stack) -> dict:
    """A digits classifier fine-tuned from a contrastive pretrain ("base"), as the API shows it."""
    few = {"epochs": 1, "batch_size": 32}
    pretrain = submit(
        stack,
        {"kind": "pretrain", "name": "base", "model": TINY_CNN, "method": {"name": "contrastive"},
         "data": {"train": {"dataset": "builtin:digits-rgb", "per_class": 10}},
         "hyperparameters": few},
    )  # fmt: skip
    pretrain = wait_for_job(stack, pretrain["id"])
    assert pretrain["status"] == "succeeded", stack.logs()
    finetune = submit(
        stack,
        {"kind": "finetune", "name": "tuned", "base_model_id": pretrain["result_model_id"],
         "method": {"name": "supervised", "params": {"freeze": "backbone"}},
         "data": {"train": {"dataset": "builtin:digits-rgb", "fraction": 0.05}},
         "hyperparameters": few},
    )  # fmt: skip
    finetune = wait_for_job(stack, finetune["id"])
    assert finetune["status"] == "succeeded", stack.logs()
    with stack.client() as client:
        return client.get(f"/v1/models/{finetune['result_model_id']}").json()


def test_the_model_page_shows_the_lineage_and_downloads_the_weights(page, tuned):
    model = tuned
    tab = page.tab
    sign_in(page, at=f"/ui/#/models/{model['id']}")
    boxes = tab.locator("#lineage > li")
    expect(boxes).to_have_count(2)
    expect(boxes.nth(0)).to_have_attribute("data-kind", "pretrain")
    expect(boxes.nth(0)).to_contain_text("contrastive")
    expect(boxes.nth(1)).to_have_attribute("aria-current", "page")
    expect(boxes.nth(1)).to_contain_text("finetune · supervised")
    expect(tab.get_by_role("heading", name="tuned", level=1)).to_be_visible()
    formats = tab.locator(".downloads button").evaluate_all("bs => bs.map(b => b.dataset.format)")
    assert formats == ["safetensors", "onnx", "archive"]  # a classifier; not an hf_encoder
    page.screenshot("model")

    with tab.expect_download() as downloading:
        tab.get_by_role("button", name="Download Weights (safetensors)").click()
    saved = downloading.value
    assert saved.suggested_filename == f"{model['id']}.safetensors"
    assert hashlib.sha256(Path(saved.path()).read_bytes()).hexdigest() == model["sha256"]
    expect(tab.locator(".download-status")).to_contain_text("Saved")

    # Up the chain: the base has no ancestors, and lists the fine-tuned model as its child.
    boxes.nth(0).get_by_role("link").click()
    expect(tab.get_by_role("heading", name="base", level=1)).to_be_visible()
    expect(tab.locator("#lineage > li")).to_have_count(1)
    expect(tab.get_by_role("link", name="tuned")).to_be_visible()
    formats = tab.locator(".downloads button").evaluate_all("bs => bs.map(b => b.dataset.format)")
    assert formats == ["safetensors"]  # a contrastive pretrain exports no ONNX

    tab.get_by_role("link", name="Models", exact=True).click()
    expect(tab.locator(f"tr[data-model-id='{model['id']}']")).to_contain_text("finetune")
    page.screenshot("models")
    page.check()


def test_the_compare_page_puts_two_jobs_side_by_side(page, stack, tuned):
    """The fine-tuned model's job and its contrastive base's job, already trained for `tuned`."""
    with stack.client() as client:
        base = client.get(f"/v1/models/{tuned['parent_model_id']}").json()
        jobs = [client.get(f"/v1/jobs/{m['source_job_id']}").json() for m in (base, tuned)]
    ids = [job["id"] for job in jobs]
    shared = sorted(set(jobs[0]["metrics"]) & set(jobs[1]["metrics"]))
    name = "validation_loss" if "validation_loss" in shared else shared[0]

    tab = page.tab
    sign_in(page, at="/ui/#/jobs?limit=100")
    for job_id in ids:
        tab.locator(f"tr[data-job-id='{job_id}'] input.pick").check()
    tab.get_by_role("button", name="Compare").click()
    expect(tab.get_by_role("heading", name="Compare jobs", level=1)).to_be_visible()
    assert tab.url.endswith(f"#/compare?jobs={ids[0]},{ids[1]}")
    expect(tab.locator("#view")).to_have_attribute("data-loaded", "true")

    for table in ("table.metrics", "table.differences"):
        headers = tab.locator(f"{table} thead th[data-job-id]")
        assert headers.evaluate_all("hs => hs.map(h => h.dataset.jobId)") == ids
        expect(headers.nth(0)).to_contain_text(ids[0])
    row = tab.locator(f"table.metrics tr[data-metric='{name}'] td")
    expect(row).to_have_count(2)
    values = [jobs[0]["metrics"][name], jobs[1]["metrics"][name]]
    if values[0] != values[1]:
        best = values.index(min(values) if lower_is_better(name) else max(values))
        expect(row.nth(best)).to_have_class(re.compile(r"\bbest\b"))
        expect(row.nth(1 - best)).not_to_have_class(re.compile(r"\bbest\b"))
    kinds = tab.locator("table.differences tr[data-path='kind'] td")
    expect(kinds).to_have_text(["pretrain", "finetune"])
    expect(tab.locator("table.differences tr[data-path='hyperparameters.epochs']")).to_have_count(0)

    figure = tab.locator("#compare-charts figure").first
    expect(figure).to_be_visible()
    lines = figure.locator("canvas").evaluate("c => Chart.getChart(c).data.datasets.length")
    assert lines >= 1
    page.screenshot("compare")

    tab.goto(f"/ui/#/compare?jobs={ids[0]},job_missing")
    expect(tab.get_by_role("alert")).to_contain_text("job_missing")
    page.check(allowed=("status of 404",))


def zeros(shape: list[int]) -> list:
    return [zeros(shape[1:]) for _ in range(shape[0])] if shape else 0


def test_the_model_page_predicts_and_shows_each_answer_or_what_is_wrong(page, stack, tuned):
    # A regressor too, trained meanwhile: one epoch of a small MLP takes seconds.
    regression = submit(
        stack,
        {"kind": "finetune", "name": "diabetes", "data": {"train": "builtin:diabetes"},
         "model": {"architecture": "mlp", "params": {"hidden": [16]}},
         "hyperparameters": {"epochs": 1, "batch_size": 64}},
    )  # fmt: skip
    image = zeros(tuned["input_shape"])
    with stack.client() as client:
        answer = client.post(f"/v1/models/{tuned['id']}/predict", json={"inputs": [image]})
        assert answer.status_code == 200, answer.text
    label = answer.json()["predictions"][0]
    tab = page.tab
    sign_in(page, at=f"/ui/#/models/{tuned['id']}")
    inputs = tab.get_by_role("textbox", name="Inputs (a JSON array)")
    expect(inputs).to_have_value("")  # an image is too large to prefill: its shape is hinted
    expect(tab.locator("#predict-hint")).to_contain_text(str(tuned["input_shape"]))
    predict = tab.get_by_role("button", name="Predict", exact=True)
    shown = tab.locator(".predict-answer")

    inputs.fill(json.dumps([image, image]))
    predict.click()
    expect(shown.locator(".answer")).to_have_count(2)
    expect(shown.locator(".predicted").first).to_have_text(f"Label: {label}")
    top = shown.locator(".answer").first.locator("tbody tr")
    expect(top).to_have_count(min(3, len(tuned["labels"])))
    expect(top.nth(0).locator("th")).to_have_text(label)  # the most probable, marked chosen
    expect(top.nth(0)).to_have_class("chosen")
    assert set(top.locator("th").all_text_contents()) <= set(tuned["labels"])
    page.screenshot("model-predicted")

    predicted = len([r for r in page.requests if r.url.endswith("/predict")])
    inputs.fill("[[0, 0]")
    predict.click()
    expect(shown.locator(".error")).to_contain_text("not valid JSON")
    assert len([r for r in page.requests if r.url.endswith("/predict")]) == predicted

    inputs.fill("[[0, 0]]")
    predict.click()
    wrong = f"inputs: has shape [1, 2]; this model takes {[1, *tuned['input_shape']]}"
    expect(shown.locator(".error")).to_contain_text(wrong)

    # The regressor's inputs are prefilled with a row keyed by column name; its answer is a
    # table of each input's targets.
    regression = wait_for_job(stack, regression["id"])
    assert regression["status"] == "succeeded", stack.logs()
    with stack.client() as client:
        regressor = client.get(f"/v1/models/{regression['result_model_id']}").json()
    tab.goto(f"/ui/#/models/{regressor['id']}")
    expect(tab.get_by_role("heading", name="diabetes", level=1)).to_be_visible()
    expect(inputs).to_have_value(re.compile(f'"{regressor["columns"][0]["name"]}": 0'))
    predict.click()
    expect(shown.locator("thead th")).to_have_text(["Input", *regressor["targets"]])
    expect(shown.locator("tbody tr")).to_have_count(1)
    page.screenshot("model-regressor-predicted")
    page.check(allowed=("status of 422",))


def test_the_jobs_list_filters_pages_and_refreshes(page, stack):
    # Three jobs of its own, cancelled at once: at least two pages of two.
    mine = [submit(stack, {**DIGITS_CNN, "name": f"listed-{i}"})["id"] for i in range(3)]
    with stack.client() as client:
        for job_id in mine:
            client.post(f"/v1/jobs/{job_id}/cancel")
    tab = page.tab
    sign_in(page, at="/ui/#/jobs?limit=2")
    rows = tab.locator("table.jobs tbody tr")
    expect(rows).to_have_count(2)
    ids = "rs => rs.map(r => r.dataset.jobId)"
    first_page = rows.evaluate_all(ids)
    tab.get_by_role("button", name="Older →").click()
    expect(tab.locator(".page-number")).to_contain_text("Page 2")
    expect(rows.first).not_to_have_attribute("data-job-id", first_page[0])
    assert not set(first_page) & set(rows.evaluate_all(ids))
    tab.get_by_role("button", name="← Newer").click()
    expect(tab.locator(".page-number")).to_contain_text("Page 1")
    expect(rows.first).to_have_attribute("data-job-id", first_page[0])

    tab.goto("/ui/#/jobs?limit=100")
    tab.get_by_label("Status").select_option("cancelled")
    for job_id in mine:
        expect(tab.locator(f"tr[data-job-id='{job_id}']")).to_be_visible()
    statuses = tab.locator("table.jobs .badge").all_text_contents()
    assert set(statuses) == {"cancelled"}
    assert "status=cancelled" in tab.url
    tab.get_by_label("Kind").select_option("pretrain")
    for job_id in mine:
        expect(tab.locator(f"tr[data-job-id='{job_id}']")).to_have_count(0)
    tab.get_by_label("Status").select_option("")
    tab.get_by_label("Kind").select_option("")
    expect(tab.locator(f"tr[data-job-id='{mine[0]}']")).to_be_visible()
    page.screenshot("jobs")

    # A job submitted elsewhere shows up without a reload.
    job = submit(stack, {**DIGITS_CNN, "name": "appears"})
    expect(tab.locator(f"tr[data-job-id='{job['id']}']")).to_be_visible(timeout=10_000)
    with stack.client() as client:
        client.post(f"/v1/jobs/{job['id']}/cancel")
    page.check()


def test_the_job_page_resumes_its_stream_after_the_api_server_restarts(page, stack):
    """A real drop: the API server is killed mid-job and another starts on the same port. The
    page reconnects with the last event id it saw and ends with every point exactly once."""
    job = submit(stack, WATCHED | {"name": "restarted"})
    sign_in(page, at=f"/ui/#/jobs/{job['id']}")
    loss = page.tab.locator("figure[data-metric=loss]")
    expect(loss).to_have_attribute("data-points", re.compile(r"[2-9]|\d\d"), timeout=120_000)
    stack.restart_api()
    expect(status_of(page.tab)).to_have_text("succeeded", timeout=120_000)
    with stack.client() as client:
        points = client.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]
    expect(loss).to_have_attribute("data-points", str(sum(p["name"] == "loss" for p in points)))
    streams = [r for r in page.requests if r.url.endswith(f"/v1/jobs/{job['id']}/stream")]
    resumed = [r.all_headers().get("last-event-id") for r in streams[1:]]
    assert resumed and all(resumed), [r.all_headers() for r in streams]
    # What the browser reports of the dropped stream and of calls while no server listened.
    page.check(allowed=("ERR_INCOMPLETE_CHUNKED_ENCODING", "ERR_CONNECTION_REFUSED",
                        "ERR_EMPTY_RESPONSE"))  # fmt: skip


# Four trials one at a time over a grid, in the order the grid sampler's seed 5 draws them:
# learning rates 3e-3, 1e-7, 3e-3, 1e-7 (batch sizes 32, 32, 64, 64). The first three complete
# (the median pruner's startup trials, so that importances can be computed); the fourth learns
# nothing, falls below their median at its first epoch and is pruned.
SWEPT_EPOCHS = 4
SWEPT = {
    "name": "swept",
    "job": {**DIGITS_CNN, "hyperparameters": {"epochs": SWEPT_EPOCHS}},
    "parameters": {
        "hyperparameters.learning_rate": {"type": "categorical", "choices": [3e-3, 1e-7]},
        "hyperparameters.batch_size": {"type": "int", "low": 32, "high": 64, "step": 32},
    },
    "sampler": {"name": "grid", "seed": 5},
    "pruner": {"name": "median", "startup_trials": 3, "warmup_epochs": 0},
    "max_trials": 4,
    "max_parallel_trials": 1,
}
ENDED = ("completed", "pruned", "failed")
# What the sweep page shows, read in the page: each trial row's number, state and job link.
TRIAL_ROWS = """() => [...document.querySelectorAll("#trials tbody tr")].map((r) => ({
    number: Number(r.dataset.trialNumber), state: r.dataset.state,
    href: r.querySelector("a")?.getAttribute("href") ?? null}))"""
# A chart's datasets: label, values, dashed or not.
DATASETS = """(name) => Chart.getChart(document.querySelector(`figure[data-chart=${name}] canvas`))
    .data.datasets.map((d) => ({label: d.label, y: d.data.map((p) => p.y),
                                dashed: (d.borderDash ?? []).length > 0}))"""


def create_sweep(stack, spec: dict) -> dict:
    with stack.client() as client:
        response = client.post("/v1/sweeps", json=spec)
        assert response.status_code == 201, response.text
        return response.json()


def sweep_status_of(tab):
    return tab.locator("#sweep-status .badge")


def numbers_of(rows: list[dict]) -> list[int]:
    return [row["number"] for row in rows]


def test_a_sweep_page_shows_its_trials_live_until_the_sweep_is_done(page, stack):
    sweep = create_sweep(stack, SWEPT)
    tab = page.tab
    sign_in(page)
    tab.get_by_role("link", name="Sweeps", exact=True).click()
    listed = tab.locator(f"tr[data-sweep-id='{sweep['id']}']")
    expect(listed).to_be_visible()
    page.screenshot("sweeps")
    listed.get_by_role("link", name="swept").click()
    expect(tab.get_by_role("heading", name="swept", level=1)).to_be_visible()
    expect(tab.locator("#trials tbody tr[data-trial-number]").first).to_be_visible()
    tab.evaluate("window.openedOnce = true")  # gone if the page were reloaded

    # The trials' states every 0.2 s while the sweep runs, the page never reloaded.
    seen: list[list[dict]] = []
    shot = False
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        rows = tab.evaluate(TRIAL_ROWS)
        seen.append(rows)
        if not shot and any(r["state"] == "running" for r in rows) and len(rows) >= 2:
            page.screenshot("sweep-running")
            shot = True
        over = tab.evaluate("document.getElementById('view').dataset.status") not in (
            "queued",
            "running",
        )
        if over and sum(r["state"] in ENDED for r in rows) == SWEPT["max_trials"]:
            break
        time.sleep(0.2)
    with stack.client() as client:
        done = client.get(f"/v1/sweeps/{sweep['id']}").json()
        trials = client.get(f"/v1/sweeps/{sweep['id']}/trials").json()["data"]
    assert [t["state"] for t in trials] == ["completed"] * 3 + ["pruned"], (trials, stack.logs())
    assert done["status"] == "succeeded"
    ended = [sum(r["state"] in ENDED for r in rows) for rows in seen]
    assert ended[0] < ended[-1] == 4, ended  # trials ended while the page was open
    assert ended == sorted(ended), ended
    assert tab.evaluate("window.openedOnce") is True
    expect(sweep_status_of(tab)).to_have_text("succeeded")
    expect(tab.locator("#stream-state")).to_have_attribute("data-state", "ended")
    expect(tab.locator("#cancel-sweep")).to_be_hidden()
    expect(tab.locator("#sweep-counts")).to_have_text("3 completed · 1 pruned")

    # The table: a row per trial, each linking to its job; sorted by a click on a header.
    rows = tab.evaluate(TRIAL_ROWS)
    assert numbers_of(rows) == [0, 1, 2, 3]
    assert [r["state"] for r in rows] == [t["state"] for t in trials]
    assert [r["href"] for r in rows] == [f"#/jobs/{t['job_id']}" for t in trials]
    by_value = [t["number"] for t in sorted(trials, key=lambda t: (t["value"], t["number"]))]
    assert by_value != [0, 1, 2, 3]  # so that the order below shows the sort
    value_header = tab.locator("#trials th[data-column=value]")
    value_header.get_by_role("button").click()
    expect(value_header).to_have_attribute("aria-sort", "ascending")
    assert numbers_of(tab.evaluate(TRIAL_ROWS)) == by_value
    value_header.get_by_role("button").click()
    expect(value_header).to_have_attribute("aria-sort", "descending")
    by_value_down = [t["number"] for t in sorted(trials, key=lambda t: (-t["value"], t["number"]))]
    assert numbers_of(tab.evaluate(TRIAL_ROWS)) == by_value_down
    tab.locator("#trials th[data-column=number] button").click()
    assert numbers_of(tab.evaluate(TRIAL_ROWS)) == [0, 1, 2, 3]

    # Every trial's curve, the pruned one dashed, named so and cut short.
    curves = tab.evaluate(DATASETS, "curves")
    assert [c["label"] for c in curves] == ["trial 0", "trial 1", "trial 2", "trial 3 (pruned)"]
    for curve, trial in zip(curves, trials, strict=True):
        epochs = sorted(trial["intermediate_values"], key=int)
        assert curve["y"] == pytest.approx([trial["intermediate_values"][e] for e in epochs])
        pruned = trial["state"] == "pruned"
        assert curve["dashed"] == pruned
        assert (len(curve["y"]) < SWEPT_EPOCHS) if pruned else (len(curve["y"]) == SWEPT_EPOCHS)

    # The objective by trial, and the best so far (the highest accuracy among the completed).
    by_trial = {d["label"]: d["y"] for d in tab.evaluate(DATASETS, "objective")}
    completed = [t["value"] for t in trials if t["state"] == "completed"]
    assert by_trial["completed"] == pytest.approx(completed)
    assert by_trial["best so far"] == pytest.approx(
        [max(completed[: i + 1]) for i in range(len(completed))]
    )
    assert by_trial["pruned (its last epoch's value)"] == pytest.approx([trials[3]["value"]])

    # Parallel coordinates: an axis per parameter and the objective, a line per completed trial.
    chart = tab.locator("#parallel-coordinates")
    axes = chart.locator(".pc-axis").evaluate_all("gs => gs.map(g => g.dataset.axis)")
    assert axes == ["learning_rate", "batch_size", "validation accuracy"]
    lines = chart.locator("polyline").evaluate_all("ls => ls.map(l => l.dataset.trialNumber)")
    assert sorted(lines) == ["0", "1", "2"]
    best = done["best_trial"]
    expect(chart.locator("polyline.best")).to_have_attribute(
        "data-trial-number", str(best["number"])
    )

    # The best trial with its job, model and test figures; the importances, once done.
    card = tab.locator("#best-trial")
    expect(card.get_by_role("link", name=f"trial {best['number']}")).to_have_attribute(
        "href", f"#/jobs/{best['job_id']}"
    )
    expect(card.get_by_role("link", name=best["model_id"])).to_be_visible()
    expect(card.locator("table.metrics")).to_contain_text("accuracy")
    importances = tab.locator("figure[data-chart=importances]")
    expect(importances).to_be_visible()
    labels = tab.evaluate(
        """() => Chart.getChart(document.querySelector("figure[data-chart=importances] canvas"))
            .data.labels"""
    )
    assert sorted(labels) == sorted(done["importances"]) == sorted(SWEPT["parameters"])
    best_first = sorted(
        [t for t in trials if t["state"] == "completed"], key=lambda t: (-t["value"], t["number"])
    )
    expect(tab.locator("#compare-trials a")).to_have_attribute(
        "href", "#/compare?jobs=" + ",".join(t["job_id"] for t in best_first)
    )
    page.screenshot("sweep-succeeded")

    # A trial's job page links back to its sweep.
    tab.locator("#trials tr[data-trial-number='3'] a").click()
    expect(status_of(tab)).to_have_text("pruned")
    tab.locator("#job-sweep a").click()
    expect(tab.get_by_role("heading", name="swept", level=1)).to_be_visible()
    tab.get_by_role("link", name="← Sweeps").click()
    expect(listed.locator(".trial-counts")).to_have_text("3 completed · 1 pruned")
    expect(listed.locator(".best-value")).to_contain_text(f"trial {best['number']}")
    page.check()


def test_the_cancel_button_cancels_a_running_sweep(page, stack):
    sweep = create_sweep(
        stack,
        {**SWEPT, "name": "sweep-to-cancel", "pruner": {"name": "none"},
         "job": {**DIGITS_CNN, "hyperparameters": {"epochs": 2000}}},
    )  # fmt: skip
    tab = page.tab
    sign_in(page, at=f"/ui/#/sweeps/{sweep['id']}")
    cancel = tab.get_by_role("button", name="Cancel sweep")
    expect(cancel).to_be_visible()
    expect(tab.locator("#trials tr[data-trial-number='0']")).to_have_attribute(
        "data-state", "running"
    )
    page.screenshot("sweep-to-cancel")
    cancel.click()
    expect(sweep_status_of(tab)).to_have_text("cancelled")
    expect(cancel).to_be_hidden()
    # The running trial's job is cancelled, and the study told: the trial failed; then the end.
    expect(tab.locator("#trials tr[data-trial-number='0']")).to_have_attribute(
        "data-state", "failed", timeout=30_000
    )
    expect(tab.locator("#stream-state")).to_have_attribute("data-state", "ended")
    with stack.client() as client:
        assert client.get(f"/v1/sweeps/{sweep['id']}").json()["status"] == "cancelled"
        trials = client.get(f"/v1/sweeps/{sweep['id']}/trials").json()["data"]
        assert [client.get(f"/v1/jobs/{t['job_id']}").json()["status"] for t in trials] == [
            "cancelled"
        ]
    page.screenshot("sweep-cancelled")
    page.check()


def test_the_parallel_coordinates_place_values_on_each_axis_by_its_scale(page):
    """Log-scaled parameters on a log axis, linear ones from low to high, categorical choices
    spread evenly, the objective over the values seen."""
    page.tab.goto("/ui/")
    placed = page.tab.evaluate(
        """async () => {
            const { numericAxis, parameterAxis } = await import("/ui/parallel-coordinates.js");
            const axis = (parameter, values) => {
                const scale = parameterAxis(parameter);
                return { at: values.map(scale.position), ticks: scale.ticks.map((t) => t.label) };
            };
            const seen = numericAxis(0.2, 0.2); // the objective's, when one trial completed
            return {
                log: axis({ type: "float", low: 1e-5, high: 1e-1, log: true }, [1e-5, 1e-3, 1e-1]),
                linear: axis({ type: "float", low: 0, high: 0.5, log: false }, [0, 0.125, 0.5]),
                int: axis({ type: "int", low: 1, high: 3, log: false, step: 1 }, [1, 2, 3]),
                categorical: axis({ type: "categorical", choices: ["sgd", "adam", "adamw"] },
                                  ["adamw", "sgd", "adam"]),
                objective: { at: [seen.position(0.2)], ticks: seen.ticks.map((t) => t.label) },
            };
        }"""
    )
    assert placed == {
        "log": {"at": [0, 0.5, 1], "ticks": ["0.00001", "0.0001", "0.001", "0.01", "0.1"]},
        "linear": {"at": [0, 0.25, 1], "ticks": ["0", "0.1", "0.2", "0.3", "0.4", "0.5"]},
        "int": {"at": [0, 0.5, 1], "ticks": ["1", "2", "3"]},
        "categorical": {"at": [1, 0, 0.5], "ticks": ["sgd", "adam", "adamw"]},
        "objective": {"at": [0.5], "ticks": ["0.2"]},
    }
    page.check()


SSE_TEXT = (
    ": keep-alive\r\n"
    'event: metric\r\nid: 1-0\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
    ":ping\n\n"
    "event: log\nid: 1-1\ndata:x\n\n"
    "retry: 250\rdata: plain\r\r"
    "id\nevent: end\ndata: {}\n\n"
    "data: never finished"
)
SSE_EVENTS = [
    {"type": "metric", "data": '{"a":\n1}', "id": "1-0"},
    {"type": "log", "data": "x", "id": "1-1"},
    {"type": "message", "data": "plain", "id": "1-1"},
    {"type": "end", "data": "{}", "id": ""},
]


def test_the_event_stream_parser_takes_text_cut_anywhere(page):
    """CRLF, CR and LF line ends, comments, multi-line data, `retry`, an empty `id`, and an
    unfinished last event, with the text cut in two at every place and fed a character at a
    time."""
    page.tab.goto("/ui/")
    parsed = page.tab.evaluate(
        """async (text) => {
            const { SSEParser } = await import("/ui/stream.js");
            const run = (pieces) => {
                const events = [];
                const parser = new SSEParser((e) => events.push(e));
                for (const piece of pieces) parser.push(piece);
                return JSON.stringify({ events, retry: parser.retry });
            };
            const results = new Set();
            for (let i = 0; i <= text.length; i++) {
                results.add(run([text.slice(0, i), text.slice(i)]));
            }
            results.add(run([...text]));
            return [...results];
        }""",
        SSE_TEXT,
    )
    assert [json.loads(p) for p in parsed] == [{"events": SSE_EVENTS, "retry": 250}]
    page.check()


# Starting work from the dashboard: a dataset uploaded and its report; a job made from the form
# built from the spec's schema, a 422 shown beside the field it names; a job's spec cloned into
# the form and submitted; a sweep made from the form. The jobs need not finish: none is waited for.

# A tabular classifier that trains in seconds: what the forms make.
TABLE_JOB = {
    "kind": "finetune",
    "name": "original",
    "data": {"train": "builtin:breast-cancer"},
    "model": {"architecture": "mlp", "params": {"hidden": [8]}},
    "hyperparameters": {"epochs": 1},
}


def spec_shown(tab) -> dict:
    """The spec in the page's JSON box."""
    return json.loads(tab.locator("#spec-json").input_value())


def control(tab, path: str):
    """The control of the form's field at `path` (`hyperparameters.epochs`)."""
    return tab.locator(f"[data-path='{path}']:is(input, select, textarea)")


def errors_of(tab, path: str):
    return tab.locator(f"#field-{re.sub(r'[^A-Za-z0-9_-]', '-', path)}-errors")


def open_new(page: Page, at: str) -> None:
    sign_in(page, at=at)
    expect(page.tab.locator("#view")).to_have_attribute("data-loaded", "true")


def test_an_uploaded_csv_shows_its_report_and_a_bad_one_what_is_wrong(page: Page, stack):
    tab = page.tab
    open_new(page, "/ui/#/datasets/upload")
    unlabelled = files.cancer_table(30).drop(columns="label").to_csv(index=False).encode()
    control(tab, "file").set_input_files(
        {"name": "unlabelled.csv", "mimeType": "text/csv", "buffer": unlabelled}
    )
    expect(control(tab, "name")).to_have_value("unlabelled")  # named after the file
    control(tab, "task").select_option(label="classification")
    tab.get_by_role("button", name="Upload and check").click()
    expect(errors_of(tab, "file")).to_contain_text("label")
    expect(control(tab, "file")).to_have_attribute("aria-invalid", "true")
    expect(tab.get_by_role("alert")).to_contain_text("Unprocessable")
    page.screenshot("upload-refused")

    control(tab, "file").set_input_files(
        {"name": "cancer.csv", "mimeType": "text/csv", "buffer": files.cancer_csv(120)}
    )
    control(tab, "name").fill("cancer")
    tab.get_by_role("button", name="Upload and check").click()
    expect(tab).to_have_url(re.compile(r"#/datasets/ds_\w+$"))
    expect(tab.get_by_role("heading", name="cancer", level=1)).to_be_visible()
    dataset_id = tab.url.rsplit("/", 1)[1]
    with stack.client() as client:
        dataset = client.get(f"/v1/datasets/{dataset_id}").json()
    assert dataset["num_examples"] == 120 and dataset["task"] == "classification"
    expect(tab.locator("#dataset-task")).to_have_text("classification")
    expect(tab.locator("#dataset-examples")).to_have_text("120")
    for label, count in dataset["class_counts"].items():
        expect(tab.locator(f"#dataset-classes tr[data-name='{label}'] td").first).to_have_text(
            str(count)
        )
    for split, count in dataset["splits"].items():
        expect(tab.locator(f"#dataset-splits tr[data-name='{split}'] td").first).to_have_text(
            str(count)
        )
    expect(tab.locator("#dataset-preview tbody tr")).to_have_count(5)
    page.screenshot("dataset-report")

    tab.locator("#train-on-it").click()
    expect(tab.locator("#view")).to_have_attribute("data-loaded", "true")
    expect(control(tab, "data.train.dataset")).to_have_value(dataset_id)
    assert spec_shown(tab)["data"] == {"train": dataset_id}
    page.check(allowed=("status of 422",))


def test_a_job_made_from_the_form_shows_a_422_beside_its_field_then_runs(page: Page, stack):
    tab = page.tab
    open_new(page, "/ui/#/jobs/new")
    expect(control(tab, "kind")).to_have_value("finetune")
    control(tab, "name").fill("from-the-form")
    control(tab, "data.train.dataset").fill("builtin:breast-cancer")
    control(tab, "model.architecture").select_option("mlp")
    # The architecture's params, from the catalog, with their defaults shown.
    expect(control(tab, "model.params.hidden")).to_have_attribute("placeholder", "128, 64")
    control(tab, "model.params.hidden").fill("8")
    # Another kind keeps what it also has, and offers its own methods.
    control(tab, "kind").select_option("adapt")
    assert spec_shown(tab) == {
        "kind": "adapt",
        "name": "from-the-form",
        "model": {"architecture": "mlp", "params": {"hidden": [8]}},
    }
    methods = (
        control(tab, "method.name").locator("option").evaluate_all("os => os.map(o => o.value)")
    )
    assert "dann" in methods and "supervised" not in methods
    control(tab, "kind").select_option("finetune")
    control(tab, "data.train.dataset").fill("builtin:breast-cancer")
    tab.locator("details[data-path='hyperparameters'] > summary").click()
    control(tab, "hyperparameters.epochs").fill("0")
    assert spec_shown(tab) == {
        "kind": "finetune",
        "name": "from-the-form",
        "data": {"train": "builtin:breast-cancer"},
        "model": {"architecture": "mlp", "params": {"hidden": [8]}},
        "hyperparameters": {"epochs": 0},
    }
    tab.get_by_role("button", name="Create job").click()
    expect(errors_of(tab, "hyperparameters.epochs")).to_contain_text("greater than or equal to 1")
    expect(control(tab, "hyperparameters.epochs")).to_have_attribute("aria-invalid", "true")
    expect(tab.get_by_role("alert")).to_contain_text("beside each field")
    page.screenshot("create-job-refused")

    # The JSON box edits the form too.
    tab.locator("#spec-json").fill(
        json.dumps({**spec_shown(tab), "hyperparameters": {"epochs": 1, "batch_size": 16}})
    )
    expect(control(tab, "hyperparameters.batch_size")).to_have_value("16")
    expect(control(tab, "hyperparameters.epochs")).to_have_value("1")
    tab.get_by_role("button", name="Create job").click()
    expect(tab).to_have_url(re.compile(r"#/jobs/job_\w+$"))
    expect(tab.get_by_role("heading", name="from-the-form", level=1)).to_be_visible()
    job_id = tab.url.rsplit("/", 1)[1]
    with stack.client() as client:
        spec = client.get(f"/v1/jobs/{job_id}").json()["spec"]
    assert spec["model"]["architecture"] == "mlp" and spec["model"]["params"]["hidden"] == [8]
    assert spec["hyperparameters"]["epochs"] == 1 and spec["hyperparameters"]["batch_size"] == 16
    assert spec["data"]["train"] == "builtin:breast-cancer"
    page.check(allowed=("status of 422",))


def test_a_cloned_job_spec_fills_the_form_and_is_submitted_as_a_new_job(page: Page, stack):
    original = submit(stack, TABLE_JOB)
    tab = page.tab
    sign_in(page, at=f"/ui/#/jobs/{original['id']}")
    tab.get_by_role("link", name="Clone").click()
    expect(tab.locator("#view")).to_have_attribute("data-loaded", "true")
    expect(tab.locator(".subtitle")).to_contain_text(f"Cloned from job {original['id']}")
    assert spec_shown(tab) == original["spec"]
    expect(control(tab, "model.architecture")).to_have_value("mlp")
    expect(control(tab, "model.params.hidden")).to_have_value("8")
    # The spec's nulls (validation, test) are fields not given, not boxes of JSON.
    expect(control(tab, "data.validation.dataset")).to_have_value("")
    control(tab, "name").fill("the-clone")
    page.screenshot("clone-job")
    tab.get_by_role("button", name="Create job").click()
    expect(tab.get_by_role("heading", name="the-clone", level=1)).to_be_visible()
    clone_id = tab.url.rsplit("/", 1)[1]
    assert clone_id != original["id"]
    with stack.client() as client:
        clone = client.get(f"/v1/jobs/{clone_id}").json()
    assert clone["spec"] == {**original["spec"], "name": "the-clone"}
    page.check()


def test_a_sweep_made_from_the_form(page: Page, stack):
    tab = page.tab
    open_new(page, "/ui/#/sweeps/new")
    control(tab, "job.data.train.dataset").fill("builtin:breast-cancer")
    control(tab, "job.model.architecture").select_option("mlp")
    # The job's fields a parameter may search are suggested, the architecture's params too.
    for path in ("hyperparameters.learning_rate", "model.params.dropout"):
        expect(tab.locator(f"#paths-list option[value='{path}']")).to_have_count(1)
    tab.get_by_label("New parameters name").fill("hyperparameters.learning_rate")
    tab.get_by_role("button", name="Add to parameters").click()
    row = "parameters.hyperparameters.learning_rate"
    expect(control(tab, f"{row}.type")).to_have_value("float")
    control(tab, f"{row}.low").fill("0.1")
    control(tab, f"{row}.high").fill("0.01")
    control(tab, "max_trials").fill("1")
    tab.get_by_role("button", name="Create sweep").click()
    expect(errors_of(tab, row)).to_contain_text("above high")
    page.screenshot("create-sweep-refused")

    control(tab, f"{row}.low").fill("0.001")
    tab.get_by_role("button", name="Create sweep").click()
    expect(tab).to_have_url(re.compile(r"#/sweeps/sweep_\w+$"))
    sweep_id = tab.url.rsplit("/", 1)[1]
    with stack.client() as client:
        sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert sweep["spec"]["parameters"] == {
        "hyperparameters.learning_rate": {
            "type": "float",
            "low": 0.001,
            "high": 0.01,
            "log": False,
            "step": None,
        }
    }
    assert sweep["spec"]["max_trials"] == 1

    tab.get_by_role("link", name="Clone").click()
    expect(tab.locator("#view")).to_have_attribute("data-loaded", "true")
    assert spec_shown(tab) == sweep["spec"]
    expect(control(tab, f"{row}.high")).to_have_value("0.01")
    page.check(allowed=("status of 422",))
