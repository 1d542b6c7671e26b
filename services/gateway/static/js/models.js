// Models tab: every version with its test metrics, then a row per collection it was evaluated
// on (each collection's held-out part, at the threshold a prediction naming it gets; external
// ones marked); cards from before collections show their external collection's metrics
// instead. Promote one, or roll back to an older one.

import { getJson, getWithToken, write } from "./api.js";
import { byId, dateTime, el, fixed, percent, replace, setStatus } from "./dom.js";
import { askForToken, forgetToken, onTokenChange, storedToken } from "./token.js";

// Columns after the version and the evaluation's name; each evaluation row's values follow this order.
const METRIC_COLUMNS = ["AUC (95% CI)", "Sensitivity", "Specificity", "Balanced accuracy", "ECE", "Images"];
const HEADER = ["Version", "Evaluated on", ...METRIC_COLUMNS, "Threshold", "Action"];

export async function showModels() {
  const status = byId("models-status");
  try {
    render(await getJson("/models"));
  } catch (error) {
    setStatus(status, `Could not load the models: ${error.message}`, "error");
  }
  await showAudit();
}

const AUDIT_ENTRIES = 20;
const AUDIT_ACTIONS = {
  promote: "Promoted",
  rollback: "Rolled back",
  automatic_promotion: "Promoted by the trainer",
  training_requested: "Training requested",
  dataset_upload: "Dataset upload",
  prediction_deleted: "Prediction deleted",
};

// The audit log follows the token: shown once one is stored, hidden again when it is forgotten.
onTokenChange(() => {
  if (!byId("panel-models").hidden) showAudit();
});

/** The newest audit entries once a write token is stored; else a button that asks for one. */
async function showAudit() {
  const holder = byId("audit-table");
  const status = byId("audit-status");
  setStatus(status, "");
  if (!storedToken()) {
    const ask = el("button", {
      type: "button",
      class: "button button--small",
      text: "Show the audit log",
      onclick: async () => {
        if ((await askForToken()) === null) setStatus(status, "The audit log needs the write token.");
      },
    });
    replace(holder, ask);
    return;
  }
  try {
    const { entries } = await getWithToken(`/audit?limit=${AUDIT_ENTRIES}`);
    replace(holder, entries.length ? auditTable(entries) : el("p", { class: "empty", text: "Nothing recorded yet." }));
  } catch (error) {
    replace(holder);
    if (error.status === 401) forgetToken(); // asks again through the button
    setStatus(status, `Could not load the audit log: ${error.message}`, "error");
  }
}

function auditTable(entries) {
  const header = ["When", "Action", "What", "Reason", "By"];
  return el(
    "table",
    { class: "data-table audit-table" },
    el("caption", { class: "visually-hidden", text: `The ${entries.length} newest audit entries, newest first` }),
    el("thead", {}, el("tr", {}, header.map((text) => el("th", { scope: "col", text })))),
    el(
      "tbody",
      {},
      entries.map((entry) =>
        el(
          "tr",
          { "data-action": entry.action },
          el("td", { "data-label": "When", text: dateTime(entry.at) }),
          el("td", { "data-label": "Action", text: AUDIT_ACTIONS[entry.action] || entry.action }),
          el("td", { "data-label": "What", text: auditWhat(entry) }),
          el("td", { "data-label": "Reason", text: entry.reason || "–" }),
          el("td", { "data-label": "By", text: auditActor(entry.actor || {}) }),
        ),
      ),
    ),
  );
}

function auditWhat(entry) {
  if (entry.to) {
    const gate = entry.gate_digest ? ` · gate ${entry.gate_digest.slice(0, 12)}` : "";
    return `${entry.from || "none"} → ${entry.to}${gate}`;
  }
  if (entry.action === "dataset_upload") return `${entry.files} file(s), ${entry.label}, into ${entry.collection}`;
  if (entry.job_id) return entry.epochs ? `${entry.job_id} (${entry.epochs} epochs)` : entry.job_id;
  return "–";
}

function auditActor(actor) {
  const where = actor.address ? ` from ${actor.address}` : "";
  return `${actor.credential || "unknown"}${where}`;
}

function render({ production, versions }) {
  const holder = byId("models-table");
  if (!versions.length) {
    replace(holder, el("p", { class: "empty", text: "No model versions yet." }));
    return;
  }
  const productionIndex = versions.findIndex((v) => v.version === production);
  replace(
    holder,
    el(
      "table",
      { class: "data-table models-table" },
      el("caption", {
        class: "visually-hidden",
        text: "Model versions, newest first: test split, external collection, then each collection's held-out part",
      }),
      el("thead", {}, el("tr", {}, HEADER.map((text) => el("th", { scope: "col", text })))),
      // One row group per version: its test row, then a row per collection (older cards: an external row).
      versions.map((version, index) => versionRows(version, productionIndex >= 0 && index > productionIndex)),
    ),
  );
}

/** The version's collections: trained-on ones first, then external ones, each by name. */
function collectionsOf(version) {
  return Object.entries(version.collections || {}).sort(
    ([nameA, a], [nameB, b]) => Number(Boolean(a.external)) - Number(Boolean(b.external)) || nameA.localeCompare(nameB),
  );
}

/** One version's row group; `older` (than production) makes its button a rollback. */
function versionRows(version, older) {
  const collections = collectionsOf(version);
  // A card with collections gives each external one a row of its own below: no pooled row.
  const pooledExternal = collections.length === 0;
  const rows = 1 + Number(pooledExternal) + collections.length;
  const name = el("th", { scope: "rowgroup", rowspan: rows }, el("span", { class: "version", text: version.version }));
  if (version.is_production) name.append(" ", el("span", { class: "badge badge--production", text: "Production" }));
  name.append(el("span", { class: "version__detail", text: `created ${dateTime(version.created_at)}` }));
  if (version.parent_version) name.append(el("span", { class: "version__detail", text: `trained from ${version.parent_version}` }));
  const action = version.is_production
    ? el("span", { class: "hint", text: "serving" })
    : el("button", {
        type: "button",
        class: "button button--small",
        "aria-label": `${older ? "Roll back to" : "Promote"} ${version.version}`,
        text: older ? "Roll back" : "Promote",
        onclick: (event) => promote(version.version, older, event.target),
      });
  // Cards from before collections: the test split of the one dataset they were trained on.
  const test = el(
    "tr",
    { class: "evaluation evaluation--test" },
    name,
    evaluationName("Test split", collections.length ? "held-out parts pooled" : "in-domain"),
    metricCells(version.metrics || {}),
    thresholdCell(version.threshold, null),
    el("td", { "data-label": "Action", rowspan: rows }, action),
  );
  const measured = version.external_metrics;
  const external = el(
    "tr",
    { class: "evaluation evaluation--external" },
    measured ? evaluationName(version.external_name || "External", "external") : evaluationName("External"),
    measured
      ? [...metricCells(measured), thresholdCell(version.threshold, null)]
      : el("td", { class: "empty", colspan: METRIC_COLUMNS.length + 1, "data-label": "External metrics", text: "not measured" }),
  );
  return el(
    "tbody",
    { class: version.is_production ? "is-production" : "" },
    test,
    pooledExternal && external,
    collections.map(([collectionName, metrics]) => collectionRow(collectionName, metrics)),
  );
}

/** A collection's held-out part (or the whole of an external one), at the threshold it was judged by. */
function collectionRow(name, m) {
  const title = el("th", { scope: "row", class: "evaluation__name" }, el("span", { class: "collection", text: name }));
  if (m.external) title.append(" ", el("span", { class: "badge badge--external", text: "External" }));
  title.append(
    el("span", { class: "version__detail", text: m.external ? "never trained on" : "held-out part" }),
  );
  return el(
    "tr",
    { class: `evaluation evaluation--collection${m.external ? " evaluation--collection-external" : ""}`, "data-collection": name },
    title,
    metricCells(m),
    thresholdCell(m.threshold, m.threshold_collection),
  );
}

/** The threshold a row's figures were taken at: the collection's own, or the global one. */
function thresholdCell(threshold, ownedBy) {
  return el("td", { "data-label": "Threshold" }, withDetail(fixed(threshold, 3), ownedBy ? "own threshold" : "global threshold"));
}

function evaluationName(title, detail) {
  const detailText = detail ? el("span", { class: "version__detail", text: detail }) : null;
  return el("th", { scope: "row", class: "evaluation__name" }, title, detailText);
}

function metricCells(m) {
  const ci = Array.isArray(m.auc_ci95) ? ` (${fixed(m.auc_ci95[0], 2)}–${fixed(m.auc_ci95[1], 2)})` : "";
  const values = [
    `${fixed(m.auc, 3)}${ci}`,
    percent(m.sensitivity),
    percent(m.specificity),
    percent(m.balanced_accuracy),
    fixed(m.ece, 3),
    m.n ?? "–",
  ];
  // data-label: the column name, shown beside each value when the table becomes cards.
  const cells = values.map((text, i) => el("td", { "data-label": METRIC_COLUMNS[i], text }));
  // Images: how many of them are malignant, where the summary says (collections do).
  if (typeof m.n_malignant === "number") replace(cells.at(-1), withDetail(String(values.at(-1)), `${m.n_malignant} malignant`));
  return cells;
}

/** A value with a muted line under it, as one node (one flex item when the table becomes cards). */
function withDetail(value, detail) {
  return el("span", { class: "cell-value" }, value, el("span", { class: "version__detail", text: detail }));
}

async function promote(version, rollback, button) {
  const status = byId("models-status");
  button.disabled = true;
  setStatus(status, `${rollback ? "Rolling back to" : "Promoting"} ${version}…`);
  try {
    const reason = rollback ? "rolled back from the web UI" : "promoted from the web UI";
    const answer = await write("POST", `/models/${encodeURIComponent(version)}/promote`, { reason });
    const previous = answer.previous ? ` (was ${answer.previous})` : "";
    setStatus(status, `Production is now ${answer.version}${previous}. Workers switch to it within seconds.`, "success");
    await showModels();
    byId("models-status").focus();
  } catch (error) {
    button.disabled = false;
    setStatus(status, `Could not ${rollback ? "roll back" : "promote"}: ${error.message}`, "error");
  }
}
