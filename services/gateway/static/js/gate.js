// The gate decision of a training job: passed or not, why, and candidate vs production metrics.

import { el, fixed, percent } from "./dom.js";

// [key, label, format, higher is better]
const ROWS = [
  ["auc", "ROC AUC", (v) => fixed(v, 3), true],
  ["sensitivity", "Sensitivity", percent, true],
  ["specificity", "Specificity", percent, true],
  ["balanced_accuracy", "Balanced accuracy", percent, true],
  ["ece", "Calibration error (ECE)", (v) => fixed(v, 3), false],
  ["threshold", "Threshold", (v) => fixed(v, 3), null],
  ["n", "Test images", (v) => (v ?? "–").toLocaleString(), null],
];

function change(candidate, production, format, higherIsBetter) {
  if (higherIsBetter === null || typeof candidate !== "number" || typeof production !== "number") {
    return el("td", { text: "" });
  }
  const delta = candidate - production;
  const better = delta === 0 ? "same" : (delta > 0) === higherIsBetter ? "better" : "worse";
  const sign = delta > 0 ? "+" : delta < 0 ? "−" : "±";
  const shown = format === percent ? `${(Math.abs(delta) * 100).toFixed(1)} pts` : Math.abs(delta).toFixed(3);
  return el("td", { class: `delta delta--${better}`, text: `${sign}${shown}` });
}

export function gateDecision(gate, candidateVersion) {
  const candidate = gate.candidate || {};
  const production = gate.production || {};
  const title = gate.passed
    ? `Gate passed: ${candidateVersion || "the candidate"} is now in production`
    : `Gate not passed: production stays ${gate.production_version || "as it was"}`;
  const rows = ROWS.map(([key, label, format, higher]) =>
    el(
      "tr",
      {},
      el("th", { scope: "row", text: label }),
      el("td", { text: format(candidate[key]) }),
      el("td", { text: gate.production ? format(production[key]) : "–" }),
      change(candidate[key], production[key], format, higher),
    ),
  );
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
        el("caption", { text: "Candidate and production on the same test split" }),
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
        el("tbody", {}, rows),
      ),
    ),
  );
}
