// Insights tab: the dataset snapshot (images per collection and part, class counts, sizes,
// intensities), the production model's test evaluation (ROC curve, confusion matrix,
// calibration) beside its evaluation on an external collection (another clinic's images), when
// it has one, and the input drift of the last day's predictions per model version.

import { getJson } from "./api.js";
import { barChart, legend, lineChart, scatterChart } from "./charts.js";
import { byId, dateTime, el, fixed, percent, replace, setStatus } from "./dom.js";

const CLASSES = ["benign", "malignant"];
// A collection's parts; `test` is its held-out part, never trained on.
const PARTS = [
  { name: "train", text: "train" },
  { name: "test", text: "held out" },
];
const CHANNELS = ["gray", "red", "green", "blue"];
const capitalised = (text) => text[0].toUpperCase() + text.slice(1);
const CLASS_LEGEND = legend(CLASSES.map((name) => ({ name, text: capitalised(name) })));

export async function showInsights() {
  const status = byId("insights-status");
  setStatus(status, "Loading…");
  // Drift is a section of its own: a failure to load it leaves the rest of the tab standing.
  const drift = getJson("/insights/drift").catch((error) => ({ error }));
  let data;
  try {
    data = await getJson("/insights");
  } catch (error) {
    return setStatus(status, `Could not load insights: ${error.message}`, "error");
  }
  const content = byId("insights-content");
  const driftPart = driftSection(await drift);
  if (!data.snapshot && !data.model) {
    replace(content, driftPart);
    return setStatus(status, "No statistics yet: they are computed when the dataset changes.");
  }
  setStatus(
    status,
    data.snapshot
      ? `Snapshot of ${dateTime(data.snapshot.computed_at)}`
      : "No dataset statistics yet: they are computed when the dataset changes.",
  );
  replace(content, data.snapshot ? datasetSection(data.snapshot) : null, modelSection(data.model), driftPart);
}

function figure(title, chart, ...extra) {
  return el("figure", { class: "figure card" }, el("figcaption", { text: title }), chart, ...extra);
}

function stat(label, value, note) {
  const dd = el("dd", { text: value }, note ? el("span", { class: "stat__note", text: note }) : null);
  return el("div", { class: "stat" }, el("dt", { text: label }), dd);
}

// --- dataset ------------------------------------------------------------------------------

function datasetSection(snapshot) {
  return el(
    "section",
    { class: "insights-section", "aria-labelledby": "insights-data-title" },
    el("h3", { id: "insights-data-title", text: "Dataset" }),
    el(
      "dl",
      { class: "stats" },
      stat("Images", (snapshot.image_count ?? 0).toLocaleString()),
      stat("Duplicates", (snapshot.duplicate_count ?? 0).toLocaleString()),
    ),
    el(
      "div",
      { class: "figure-grid" },
      collectionCounts(snapshot.collections),
      classCounts(snapshot.counts || {}),
      imageSizes(snapshot.sizes),
      intensities(snapshot.intensity),
      brightness(snapshot),
    ),
  );
}

/** One row per collection: its training and held-out images per class, and its total. */
function collectionCounts(collections) {
  const names = Object.keys(collections || {});
  if (!names.length) return null;
  const count = (counts, part, label) => counts?.[part]?.[label] ?? 0;
  const cells = (counts) => PARTS.flatMap((part) => CLASSES.map((label) => count(counts, part.name, label)));
  const number = (value) => el("td", { class: "num", text: value.toLocaleString() });
  const row = (name) => {
    const { external, counts } = collections[name];
    const values = cells(counts);
    const title = el("th", { scope: "row" }, name);
    if (external) title.append(" ", el("span", { class: "badge badge--external", text: "external" }));
    return el("tr", { "data-collection": name }, title, values.map(number), number(values.reduce((a, b) => a + b, 0)));
  };
  const table = el(
    "table",
    { class: "data-table collections-table" },
    el("colgroup", { span: 1 }),
    PARTS.map(() => el("colgroup", { span: CLASSES.length })),
    el("colgroup", { span: 1 }),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col", rowspan: 2, text: "Collection" }),
        PARTS.map((part) => el("th", { scope: "colgroup", colspan: CLASSES.length, text: capitalised(part.text) })),
        el("th", { scope: "col", rowspan: 2, class: "num", text: "Total" }),
      ),
      el("tr", {}, PARTS.flatMap(() => CLASSES.map((label) => el("th", { scope: "col", class: "num", text: label })))),
    ),
    el("tbody", {}, names.map(row)),
  );
  const note = "Held out: never trained on; the model's test metrics come from it. An external collection (another clinic's images) is held out whole.";
  const wide = figure("Images per collection", el("div", { class: "table-scroll" }, table), el("p", { class: "hint", text: note }));
  wide.classList.add("figure--wide");
  return wide;
}

/** Images per class in the training and held-out parts, pooled over the collections. */
function classCounts(counts) {
  const categories = PARTS.map((part) => part.text);
  const series = CLASSES.map((name) => ({ name, values: PARTS.map((part) => counts[part.name]?.[name] ?? 0) }));
  const summary = PARTS.map((part, i) => `${part.text}: ${series.map((s) => `${s.values[i]} ${s.name}`).join(", ")}`);
  const chart = barChart({ label: `Images per class and part, all collections. ${summary.join("; ")}`, categories, series, yLabel: "images" });
  return figure("Classes per part (all collections)", chart, CLASS_LEGEND.cloneNode(true));
}

function imageSizes(sizes) {
  const points = sizes?.points || [];
  if (!points.length) return figure("Image sizes", el("p", { class: "empty", text: "No sizes recorded." }));
  const total = points.reduce((sum, p) => sum + (p[2] ?? 1), 0);
  const chart = scatterChart({
    label: `Image sizes: ${points.length} distinct width and height pairs over ${total} images`,
    points,
    x: { label: "width (px)" },
    y: { label: "height (px)" },
    describe: (w, h, count) => `${w} × ${h} px: ${count} image${count === 1 ? "" : "s"}`,
  });
  return figure("Image sizes (dot area: number of images)", chart);
}

function intensities(intensity) {
  if (!intensity) return figure("Pixel intensity", el("p", { class: "empty", text: "No intensities recorded." }));
  const holder = el("div", { class: "chart-holder" });
  const bins = intensity.bins || 32;
  const draw = (channel) => {
    const series = CLASSES.filter((name) => intensity[name]?.[channel]).map((name) => ({
      name,
      points: intensity[name][channel].map((fraction, i) => [((i + 0.5) * 256) / bins, fraction]),
    }));
    const max = Math.max(0.01, ...series.flatMap((s) => s.points.map((p) => p[1])));
    replace(
      holder,
      lineChart({
        label: `Histogram of ${channel} intensity, benign and malignant images`,
        series,
        x: { min: 0, max: 256, label: `${channel} intensity (0–255)` },
        y: { min: 0, max: max * 1.1, label: "fraction of pixels" },
      }),
    );
  };
  const select = el(
    "select",
    { id: "intensity-channel", onchange: (event) => draw(event.target.value) },
    CHANNELS.map((channel) => el("option", { value: channel, text: channel })),
  );
  draw(CHANNELS[0]);
  return figure(
    "Pixel intensity by class",
    el("div", { class: "field field--inline" }, el("label", { for: "intensity-channel", text: "Channel" }), select),
    holder,
    CLASS_LEGEND.cloneNode(true),
  );
}

function brightness(snapshot) {
  const rows = [
    ["Brightness", snapshot.brightness],
    ["Contrast", snapshot.contrast],
  ].filter(([, values]) => values);
  if (!rows.length) return null;
  return figure(
    "Brightness and contrast (mean ± standard deviation)",
    el(
      "table",
      { class: "data-table" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "" }), CLASSES.map((name) => el("th", { scope: "col", text: name })))),
      el(
        "tbody",
        {},
        rows.map(([label, values]) =>
          el(
            "tr",
            {},
            el("th", { scope: "row", text: label }),
            CLASSES.map((name) => el("td", { text: values[name] ? `${fixed(values[name].mean, 1)} ± ${fixed(values[name].std, 1)}` : "–" })),
          ),
        ),
      ),
    ),
  );
}

// --- model --------------------------------------------------------------------------------

function modelSection(model) {
  const section = el(
    "section",
    { class: "insights-section", "aria-labelledby": "insights-model-title" },
    el("h3", { id: "insights-model-title", text: model ? `Production model ${model.version}` : "Production model" }),
  );
  const test = model?.test;
  if (!test) {
    section.append(el("p", { class: "empty", text: "No test evaluation of the production model yet." }));
    return section;
  }
  const ci = test.auc_ci95 ? `95% CI ${fixed(test.auc_ci95[0], 2)}–${fixed(test.auc_ci95[1], 2)}` : null;
  // Said, not left out: an old card was never evaluated on another clinic's images.
  const notMeasured = model.external
    ? []
    : [el("p", { class: "empty", text: "External collection: not measured. This version was not evaluated on another clinic's images." })];
  section.append(
    el(
      "dl",
      { class: "stats" },
      stat("ROC AUC", fixed(test.auc, 3), ci),
      stat("Sensitivity", percent(test.sensitivity)),
      stat("Specificity", percent(test.specificity)),
      stat("Balanced accuracy", percent(test.balanced_accuracy)),
      stat("Calibration error (ECE)", fixed(test.ece, 3)),
      stat("Threshold", fixed(model.threshold, 3)),
      stat("Test images", (test.n ?? 0).toLocaleString()),
    ),
    ...notMeasured,
    el(
      "div",
      { class: "figure-grid" },
      externalComparison(model),
      rocCurve(test, model.external, externalName(model)),
      confusionMatrix(test.confusion_matrix),
      reliability(test.reliability),
    ),
  );
  return section;
}

const externalName = (model) => model.external_name || "External collection";

/** Test split and external collection side by side; null when the latter was not measured. */
function externalComparison(model) {
  const { test, external } = model;
  if (!external) return null;
  const name = externalName(model);
  const auc = (m) => (m.auc_ci95 ? `${fixed(m.auc, 3)} (${fixed(m.auc_ci95[0], 2)}–${fixed(m.auc_ci95[1], 2)})` : fixed(m.auc, 3));
  const rows = [
    ["Images", (m) => (m.n ?? 0).toLocaleString()],
    ["ROC AUC (95% CI)", auc],
    ["Sensitivity", (m) => percent(m.sensitivity)],
    ["Specificity", (m) => percent(m.specificity)],
    ["Balanced accuracy", (m) => percent(m.balanced_accuracy)],
    ["Calibration error (ECE)", (m) => fixed(m.ece, 3)],
  ];
  const table = el(
    "table",
    { class: "data-table external-table" },
    el("caption", { text: `Both at the threshold ${fixed(model.threshold, 3)}` }),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col", text: "Metric" }),
        el("th", { scope: "col", text: "Test split (in-domain)" }),
        el("th", { scope: "col", text: `${name} (external)` }),
      ),
    ),
    el(
      "tbody",
      {},
      rows.map(([label, format]) =>
        el("tr", {}, el("th", { scope: "row", text: label }), el("td", { text: format(test) }), el("td", { text: format(external) })),
      ),
    ),
  );
  const note = `${name} comes from another clinic; the model never trained on it, and its calibration was fitted on other images. The threshold may have been lowered so that sensitivity holds on it too (the model card says).`;
  return figure("Test split and another clinic's images", el("div", { class: "table-scroll" }, table), el("p", { class: "hint", text: note }));
}

function operatingPoint(name, metrics) {
  if (typeof metrics.sensitivity !== "number" || typeof metrics.specificity !== "number") return null;
  return { name, points: [[1 - metrics.specificity, metrics.sensitivity]], markers: true };
}

function rocPoints(metrics) {
  const roc = metrics?.roc_curve;
  return roc?.fpr?.length ? roc.fpr.map((fpr, i) => [fpr, roc.tpr[i]]) : null;
}

function rocCurve(test, external, name) {
  const points = rocPoints(test);
  if (!points) return null;
  const series = [{ name: "roc", points }, operatingPoint("operating", test)];
  const items = [
    { name: "roc", text: "ROC curve (test split)" },
    { name: "operating", text: "operating point (threshold)" },
  ];
  let label = `ROC curve, AUC ${fixed(test.auc, 3)}`;
  const externalPoints = rocPoints(external);
  if (externalPoints) {
    // Drawn first, so the in-domain curve stays on top where they cross.
    series.unshift({ name: "external", points: externalPoints }, operatingPoint("external-operating", external));
    items.push(
      { name: "external", text: `ROC curve (${name})` },
      { name: "external-operating", text: `operating point on ${name}` },
    );
    label += `; on ${name} AUC ${fixed(external.auc, 3)}`;
  }
  const chart = lineChart({
    label,
    series: series.filter(Boolean),
    x: { min: 0, max: 1, label: "false positive rate (1 − specificity)" },
    y: { min: 0, max: 1, label: "true positive rate (sensitivity)" },
    diagonal: true,
    markers: false,
  });
  return figure(`ROC curve (AUC ${fixed(test.auc, 3)})`, chart, legend(items));
}

function confusionMatrix(matrix) {
  if (!matrix) return null;
  const { tp = 0, fn = 0, tn = 0, fp = 0 } = matrix;
  const cell = (count, rowTotal, correct, label) => {
    const td = el("td", { class: `cm__cell cm__cell--${correct ? "correct" : "wrong"}`, "aria-label": `${label}: ${count}` });
    td.append(el("span", { class: "cm__count", text: count.toLocaleString() }), el("span", { class: "cm__share", text: percent(rowTotal ? count / rowTotal : null, 0) }));
    td.style.setProperty("--share", rowTotal ? count / rowTotal : 0);
    return td;
  };
  const table = el(
    "table",
    { class: "cm" },
    el("caption", { class: "visually-hidden", text: "Confusion matrix: rows are the true class, columns the prediction" }),
    el(
      "thead",
      {},
      el("tr", {}, el("td", {}), el("th", { scope: "col", text: "Predicted benign" }), el("th", { scope: "col", text: "Predicted malignant" })),
    ),
    el(
      "tbody",
      {},
      el("tr", {}, el("th", { scope: "row", text: "Benign" }), cell(tn, tn + fp, true, "true negatives"), cell(fp, tn + fp, false, "false positives")),
      el("tr", {}, el("th", { scope: "row", text: "Malignant" }), cell(fn, tp + fn, false, "false negatives"), cell(tp, tp + fn, true, "true positives")),
    ),
  );
  return figure("Confusion matrix at the threshold (rows: true class)", el("div", { class: "cm-holder" }, table));
}

function reliability(bins) {
  const points = (bins || []).filter((b) => b.count > 0).map((b) => [b.mean_score, b.observed]);
  if (!points.length) return null;
  const chart = lineChart({
    label: "Calibration: observed share of malignant against the predicted probability",
    series: [{ name: "calibration", points }],
    x: { min: 0, max: 1, label: "predicted probability of malignant" },
    y: { min: 0, max: 1, label: "observed share malignant" },
    diagonal: true,
    markers: true,
  });
  return figure("Calibration (closer to the diagonal is better)", chart);
}

// --- input drift --------------------------------------------------------------------------

const DAY_S = 86_400;

/** Per model version served in the last day: how far its recent images are from the ones it
 * was trained on (the drift figure, against the alert threshold) and how many were flagged. */
function driftSection(answer) {
  const section = el(
    "section",
    { class: "insights-section", "aria-labelledby": "insights-drift-title" },
    el("h3", { id: "insights-drift-title", text: "Input drift (last 24 hours)" }),
  );
  if (answer.error) {
    section.append(el("p", { class: "empty", text: `Could not load the drift figures: ${answer.error.message}` }));
    return section;
  }
  const record = answer.drift;
  const versions = record
    ? Object.entries(record.versions).filter(([, entry]) => entry.last_seen > record.computed_at - DAY_S)
    : [];
  if (!versions.length) {
    const text = "No predictions in the last 24 hours from a model version with domain statistics: nothing to compare yet.";
    section.append(el("p", { class: "empty", text }));
    return section;
  }
  section.append(driftTable(versions, record), el("p", { class: "hint", text: driftExplanation(record) }));
  return section;
}

function driftTable(versions, record) {
  const number = (text) => el("td", { class: "num", text });
  const row = ([version, entry]) =>
    el(
      "tr",
      { "data-version": version },
      el("th", { scope: "row", text: version }),
      number(entry.last_day.predictions.toLocaleString()),
      number(fixed(entry.window.drift, 2)),
      number(fixed(entry.last_day.drift_max, 2)),
      number(percent(entry.last_day.flagged_share.unlike_training)),
      number(percent(entry.last_day.flagged_share.not_dermoscopy)),
      el("td", {}, verdict(entry, record)),
    );
  const headings = ["Model version", "Predictions", "Drift now", "Highest drift", "Unlike training", "Not dermoscopy", "Verdict"];
  return el(
    "div",
    { class: "table-scroll" },
    el(
      "table",
      { class: "data-table drift-table" },
      el("thead", {}, el("tr", {}, headings.map((text, i) => el("th", { scope: "col", class: i && i < 6 ? "num" : null, text })))),
      el("tbody", {}, versions.map(row)),
    ),
  );
}

/** What the figures mean for the version, in words. */
function verdict(entry, record) {
  const drift = entry.window.drift;
  if (drift === null || drift === undefined) {
    const text = `Not enough recent predictions to judge (${entry.window.predictions} of ${record.min_window})`;
    return el("span", { class: "empty", text });
  }
  if (drift > record.threshold) {
    const text = "Drifted: recent images differ from the training images; read its probabilities with care";
    return el("span", { class: "badge badge--drifted", text });
  }
  return el("span", { class: "badge badge--production", text: "Like the training images" });
}

function driftExplanation(record) {
  return (
    `Drift compares the images of each version's last ${record.window_size} predictions with the images it was ` +
    `validated on: about 0.1–0.2 for images like those of the training clinics, more for images from ` +
    `elsewhere; above ${fixed(record.threshold, 2)} the InputDrift alert fires. The shares are the last 24 hours' ` +
    `predictions with a warning: unlike training (a dermatoscope image from a setting unlike the training ` +
    `images) and not dermoscopy (not a dermatoscope image at all). As of ${dateTime(record.computed_at)}.`
  );
}
