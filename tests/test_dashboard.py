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

from tests.stack import postgres_redis_stack
from tests.test_core import DIGITS_CNN

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


def wait_for_job(stack, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    with stack.client() as client:
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
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


def test_the_model_page_shows_the_lineage_and_downloads_the_weights(page, stack):
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
        model = client.get(f"/v1/models/{finetune['result_model_id']}").json()

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
