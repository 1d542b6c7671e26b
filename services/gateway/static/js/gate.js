// The gate decision of a training job: passed or not, why, candidate vs production metrics on
// the test split and, when the store has one, on the external collection, and (jobs since
// collections) each collection's AUC: judged, or reported but not judged when it is too small.

import { el, fixed, percent } from "./dom.js";

// How a change reads: "higher" or "lower" is better (coloured), "shown" is a plain difference
// the gate does not judge, null shows none.
// [key, label, format, change]
const TEST_ROWS = [
  ["auc", "ROC AUC", (v) => fixed(v, 3), "higher"],
  ["sensitivity", "Sensitivity", percent, "higher"],
  ["specificity", "Specificity", percent, "higher"],
  ["balanced_accuracy", "Balanced accuracy", percent, "higher"],
  ["ece", "Calibration error (ECE)", (v) => fixed(v, 3), "lower"],
  ["threshold", "Threshold", (v) => fixed(v, 3), null],
  ["n", "Test images", (v) => (v ?? "–").toLocaleString(), null],
];

// Only AUC is compared on the external collection: the candidate's threshold was chosen on it,
// so its sensitivity and specificity there are shown uncoloured (the reasons say why).
const EXTERNAL_ROWS = [
  ["auc", "ROC AUC", (v) => fixed(v, 3), "higher"],
  ["sensitivity", "Sensitivity", percent, "shown"],
  ["specificity", "Specificity", percent, "shown"],
  ["n", "Images", (v) => (v ?? "–").toLocaleString(), null],
];

function change(candidate, production, format, how) {
  if (how === null || typeof candidate !== "number" || typeof production !== "number") {
    return el("td", { text: "" });
  }
  const delta = candidate - production;
  const better = how === "shown" || delta === 0 ? "same" : (delta > 0) === (how === "higher") ? "better" : "worse";
  const sign = delta > 0 ? "+" : delta < 0 ? "−" : "±";
  const shown = format === percent ? `${(Math.abs(delta) * 100).toFixed(1)} pts` : Math.abs(delta).toFixed(3);
  return el("td", { class: `delta delta--${better}`, text: `${sign}${shown}` });
}

function metricRows(rows, candidate, production) {
  return rows.map(([key, label, format, how]) =>
    el(
      "tr",
      {},
      el("th", { scope: "row", text: label }),
      el("td", { text: format((candidate || {})[key]) }),
      el("td", { text: production ? format(production[key]) : "–" }),
      change((candidate || {})[key], (production || {})[key], format, how),
    ),
  );
}

/** A group of rows headed by its name and what it is, as a version's rows are in the Models tab. */
function group(modifier, title, detail, rows) {
  const heading = el(
    "th",
    { scope: "rowgroup", colspan: 4, class: "gate__group-name" },
    title,
    el("span", { class: "version__detail", text: detail }),
  );
  return el("tbody", { class: `gate__group gate__group--${modifier}` }, el("tr", {}, heading), rows);
}

/** Candidate vs production AUC on each collection's held-out part, and the gate's verdict on it. */
function collectionsTable(gate, candidateVersion) {
  const entries = Object.entries(gate.collections).sort(
    ([nameA, a], [nameB, b]) => Number(Boolean(a.external)) - Number(Boolean(b.external)) || nameA.localeCompare(nameB),
  );
  const auc = (v) => fixed(v, 3);
  const rows = entries.map(([name, entry]) => {
    const candidate = entry.candidate || {};
    const production = entry.production;
    const title = el("th", { scope: "row" }, el("span", { class: "collection", text: name }));
    if (entry.external) title.append(" ", el("span", { class: "badge badge--external", text: "External" }));
    if (typeof candidate.n === "number") {
      const malignant = typeof candidate.n_malignant === "number" ? `, ${candidate.n_malignant.toLocaleString()} malignant` : "";
      title.append(el("span", { class: "version__detail", text: `${candidate.n.toLocaleString()} images${malignant}` }));
    }
    const verdict = !entry.judged ? "reported" : entry.passed ? "passed" : "failed";
    const verdictText = { reported: "Reported, not judged", passed: "Judged: passed", failed: "Judged: not passed" }[verdict];
    return el(
      "tr",
      { class: `gate__collection gate__collection--${verdict}`, "data-collection": name },
      title,
      el("td", { text: auc(candidate.auc) }),
      el("td", { text: production ? auc(production.auc) : "–" }),
      // Only a judged collection's change is coloured: a small one's AUC moves by chance.
      change(candidate.auc, production?.auc, auc, entry.judged ? "higher" : "shown"),
      el("td", { class: `verdict verdict--${verdict}`, text: verdictText }),
    );
  });
  const minimum = gate.min_malignant ? ` with at least ${gate.min_malignant} cases of each class` : "";
  return el(
    "div",
    { class: "table-scroll" },
    el(
      "table",
      { class: "data-table gate__table gate__collections" },
      el("caption", {
        text: `AUC on each collection's held-out part, candidate and production on the same images: collections${minimum} are judged, smaller ones reported, not judged`,
      }),
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", { scope: "col", text: "Collection" }),
          el("th", { scope: "col", text: `Candidate AUC${candidateVersion ? ` (${candidateVersion})` : ""}` }),
          el("th", { scope: "col", text: `Production AUC${gate.production_version ? ` (${gate.production_version})` : ""}` }),
          el("th", { scope: "col", text: "Change" }),
          el("th", { scope: "col", text: "Gate" }),
        ),
      ),
      el("tbody", {}, rows),
    ),
  );
}

export function gateDecision(gate, candidateVersion) {
  const title = gate.passed
    ? `Gate passed: ${candidateVersion || "the candidate"} is now in production`
    : `Gate not passed: production stays ${gate.production_version || "as it was"}`;
  const testRows = metricRows(TEST_ROWS, gate.candidate, gate.production);
  // Jobs from before the external split (or without one imported) keep the single test table.
  const hasExternal = Boolean(gate.external_candidate);
  // Jobs since collections: the test split is every trained-on collection's held-out part pooled.
  const byCollection = gate.collections && Object.keys(gate.collections).length ? gate.collections : null;
  const body = hasExternal
    ? [
        group("test", "Test split", byCollection ? "held-out parts pooled, global threshold" : "in-domain", testRows),
        group(
          "external",
          "External collection",
          "another clinic's images, never trained on",
          metricRows(EXTERNAL_ROWS, gate.external_candidate, gate.external_production),
        ),
      ]
    : el("tbody", {}, testRows);
  return el(
    "div",
    { class: `gate gate--${gate.passed ? "passed" : "failed"}` },
    el("h4", { class: "gate__title", text: title }),
    gate.reasons?.length ? el("ul", { class: "gate__reasons" }, gate.reasons.map((reason) => el("li", { text: reason }))) : null,
    el(
      "div",
      { class: "table-scroll" },
      el(
        "table",
        { class: "data-table gate__table" },
        el("caption", {
          text: hasExternal
            ? "Candidate and production on the same test split and the same external collection"
            : "Candidate and production on the same test split",
        }),
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", { scope: "col", text: "Metric" }),
            el("th", { scope: "col", text: `Candidate${candidateVersion ? ` (${candidateVersion})` : ""}` }),
            el("th", { scope: "col", text: `Production${gate.production_version ? ` (${gate.production_version})` : ""}` }),
            el("th", { scope: "col", text: "Change" }),
          ),
        ),
        body,
      ),
    ),
    byCollection ? collectionsTable(gate, candidateVersion) : null,
  );
}
