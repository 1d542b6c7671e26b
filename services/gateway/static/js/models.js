// Models tab: every version with its test metrics and, under them, its metrics on an
// external collection (another clinic's images); promote one, or roll back to an older one.

import { getJson, write } from "./api.js";
import { byId, dateTime, el, fixed, percent, replace, setStatus } from "./dom.js";

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
      el("caption", { class: "visually-hidden", text: "Model versions, newest first: test split, then external collection" }),
      el("thead", {}, el("tr", {}, HEADER.map((text) => el("th", { scope: "col", text })))),
      // One row group per version: its test row, then its external row.
      versions.map((version, index) => versionRows(version, productionIndex >= 0 && index > productionIndex)),
    ),
  );
}

/** One version's row group; `older` (than production) makes its button a rollback. */
function versionRows(version, older) {
  const name = el("th", { scope: "rowgroup", rowspan: 2 }, el("span", { class: "version", text: version.version }));
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
  const test = el(
    "tr",
    { class: "evaluation evaluation--test" },
    name,
    evaluationName("Test split", "in-domain"),
    metricCells(version.metrics || {}),
    el("td", { "data-label": "Threshold", rowspan: 2, text: fixed(version.threshold, 3) }),
    el("td", { "data-label": "Action", rowspan: 2 }, action),
  );
  const measured = version.external_metrics;
  const external = el(
    "tr",
    { class: "evaluation evaluation--external" },
    measured ? evaluationName(version.external_name || "External", "external") : evaluationName("External"),
    measured
      ? metricCells(measured)
      : el("td", { class: "empty", colspan: METRIC_COLUMNS.length, "data-label": "External metrics", text: "not measured" }),
  );
  return el("tbody", { class: version.is_production ? "is-production" : "" }, test, external);
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
  return values.map((text, i) => el("td", { "data-label": METRIC_COLUMNS[i], text }));
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
