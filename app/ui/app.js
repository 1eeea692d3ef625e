// The dashboard's entry point: the hash router (#/jobs, #/jobs/new, #/jobs/{id},
// #/compare?jobs=…, #/sweeps, #/sweeps/new, #/sweeps/{id}, #/models, #/models/{id}, #/datasets,
// #/datasets/upload, #/datasets/{id}) and the API key form, shown when there is no key and
// whenever the server refuses one.

import { AuthRequired, apiJson, forgetKey, getKey, onAuthRequired, setKey } from "./api.js";
import { h, heading, replace } from "./dom.js";
import * as comparePage from "./compare-page.js";
import { newJobPage, newSweepPage } from "./create-page.js";
import * as datasetPage from "./dataset-page.js";
import * as datasetsPage from "./datasets-page.js";
import * as jobPage from "./job-page.js";
import * as jobsPage from "./jobs-page.js";
import * as modelPage from "./model-page.js";
import * as modelsPage from "./models-page.js";
import * as sweepPage from "./sweep-page.js";
import * as sweepsPage from "./sweeps-page.js";
import * as uploadPage from "./upload-page.js";

// The first that matches wins: "new" and "upload" before the ids (which have a prefix: job_…).
const ROUTES = [
  { pattern: /^\/jobs\/?$/, page: jobsPage, section: "jobs" },
  { pattern: /^\/jobs\/new$/, page: newJobPage, section: "jobs" },
  { pattern: /^\/jobs\/([^/]+)$/, page: jobPage, section: "jobs" },
  { pattern: /^\/compare\/?$/, page: comparePage, section: "jobs" },
  { pattern: /^\/sweeps\/?$/, page: sweepsPage, section: "sweeps" },
  { pattern: /^\/sweeps\/new$/, page: newSweepPage, section: "sweeps" },
  { pattern: /^\/sweeps\/([^/]+)$/, page: sweepPage, section: "sweeps" },
  { pattern: /^\/models\/?$/, page: modelsPage, section: "models" },
  { pattern: /^\/models\/([^/]+)$/, page: modelPage, section: "models" },
  { pattern: /^\/datasets\/?$/, page: datasetsPage, section: "datasets" },
  { pattern: /^\/datasets\/upload$/, page: uploadPage, section: "datasets" },
  { pattern: /^\/datasets\/([^/]+)$/, page: datasetPage, section: "datasets" },
];

const view = document.getElementById("view");
const main = document.getElementById("main");
const keyPanel = document.getElementById("key-panel");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyMessage = document.getElementById("key-message");
const forget = document.getElementById("forget-key");
let cleanup = null;

function teardown() {
  cleanup?.();
  cleanup = null;
  delete view.dataset.status;
  delete view.dataset.loaded;
}

function showKeyForm(message) {
  teardown();
  view.replaceChildren();
  view.hidden = true;
  keyPanel.hidden = false;
  forget.hidden = true;
  for (const link of document.querySelectorAll("[data-section]")) link.removeAttribute("aria-current");
  keyMessage.textContent = message;
  keyMessage.hidden = !message;
  document.title = "API key · tunery";
  keyInput.focus();
}

function notFound(path) {
  document.title = "Not found · tunery";
  return [
    heading("Not found"),
    h("p", {}, `Nothing here at ${path}. `, h("a", { href: "#/jobs" }, "See the jobs.")),
  ];
}

function route({ focus = false } = {}) {
  const hash = location.hash;
  if (hash === "" || hash === "#" || hash === "#/") {
    location.replace("#/jobs");
    return;
  }
  if (!hash.startsWith("#/")) return; // an in-page anchor, not a route
  if (!getKey()) {
    showKeyForm("");
    return;
  }
  teardown();
  keyPanel.hidden = true;
  view.hidden = false;
  forget.hidden = false;
  const [path, search = ""] = hash.slice(1).split("?", 2);
  const query = new URLSearchParams(search);
  const found = ROUTES.map((r) => ({ ...r, match: r.pattern.exec(path) })).find((r) => r.match);
  for (const link of document.querySelectorAll("[data-section]")) {
    if (found && link.dataset.section === found.section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!found) {
    replace(view, notFound(path));
  } else {
    let params = {};
    try {
      params = found.match[1] ? { id: decodeURIComponent(found.match[1]) } : {};
    } catch {
      replace(view, notFound(path)); // a malformed %-escape
      return;
    }
    document.title = `${found.section[0].toUpperCase()}${found.section.slice(1)} · tunery`;
    cleanup = found.page.render(view, params, query) ?? null;
  }
  if (focus) view.querySelector("h1")?.focus();
}

keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (!key) return;
  setKey(key);
  keyInput.value = "";
  const submit = keyForm.querySelector("button[type=submit]");
  submit.disabled = true;
  keyMessage.hidden = false;
  keyMessage.textContent = "Checking the key…";
  try {
    await apiJson("/v1/jobs?limit=1");
  } catch (error) {
    if (error instanceof AuthRequired) return; // the form is back, saying why
    // Anything else (the server busy, the network down) says nothing about the key.
  } finally {
    submit.disabled = false;
  }
  route({ focus: true });
});

forget.addEventListener("click", () => {
  forgetKey();
  showKeyForm("The key was forgotten. Enter a key to continue.");
});

document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

onAuthRequired((message) => showKeyForm(message));
window.addEventListener("hashchange", () => route({ focus: true }));
route();
