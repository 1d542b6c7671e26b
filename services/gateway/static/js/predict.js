// Predict tab: choose or drop images, one request per file (in parallel), one card per file.
// An optional collection (the clinic's name) is sent with each: its own threshold, when the
// model has one, decides the label, and each answer says which threshold was used.

import { ApiError, config, getImageUrl, getJson, post } from "./api.js";
import { byId, duration, el, percent, replace, setStatus } from "./dom.js";

const previews = new Set();

export function initPredict() {
  const input = byId("predict-files");
  const zone = byId("predict-dropzone");
  input.addEventListener("change", () => {
    predictAll([...input.files]);
    input.value = ""; // choosing the same file again fires "change" again
  });

  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dropzone--active");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dropzone--active"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dropzone--active");
    predictAll([...event.dataTransfer.files]);
  });
  // A file dropped next to the zone must not make the browser navigate away to it.
  for (const type of ["dragover", "drop"]) document.addEventListener(type, (event) => event.preventDefault());

  byId("predict-clear").addEventListener("click", clearResults);
  showRetention();
}

/** Say how long the images sent here are kept, as the gateway's configuration says. */
async function showRetention() {
  const { prediction_retention: retention } = await config();
  if (!retention) return;
  const note = byId("predict-retention");
  note.textContent = `${retention} Their metadata (EXIF, GPS position, camera) is removed before they are stored.`;
  note.hidden = false;
}

function predictAll(files) {
  if (!files.length) return;
  const status = byId("predict-status");
  const input = byId("predict-collection");
  input.value = input.value.trim();
  if (!input.checkValidity()) {
    input.focus();
    setStatus(
      status,
      "The collection must be 1 to 40 characters of a-z, 0-9, “_” and “-”, starting with a letter or digit; or leave it empty.",
      "error",
    );
    return;
  }
  setStatus(status, "");
  byId("predict-clear").hidden = false;
  const collection = input.value || null;
  files.forEach((file) => predictOne(file, collection));
}

function clearResults() {
  previews.forEach((url) => URL.revokeObjectURL(url));
  previews.clear();
  replace(byId("predict-results"));
  byId("predict-clear").hidden = true;
  byId("predict-files").focus();
}

async function predictOne(file, collection) {
  const card = resultCard(file);
  byId("predict-results").append(card.root);
  const form = new FormData();
  if (collection) form.append("collection", collection);
  form.append("file", file, file.name);
  try {
    let answer;
    try {
      answer = await post("/predictions", form);
    } catch (error) {
      // 504: the job is queued but slow to answer; it still completes, so poll for it.
      const id = error.status === 504 ? error.detail.ids?.[0] : undefined;
      if (!id) throw error;
      card.status.textContent = "The server is busy; still waiting for the answer…";
      answer = await poll(id);
    }
    showAnswer(card, answer);
  } catch (error) {
    showError(card, error);
  } finally {
    card.root.removeAttribute("aria-busy");
  }
}

const POLL_MS = 1000;
const POLL_LIMIT_MS = 120_000;

async function poll(id) {
  const deadline = Date.now() + POLL_LIMIT_MS;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    const answer = await getJson(`/predictions/${encodeURIComponent(id)}`);
    if (answer.status === "failed") throw new ApiError(422, answer.error?.code, answer.error?.message || "failed");
    if (answer.status !== "pending") return answer;
  }
  throw new Error(`No answer after ${POLL_LIMIT_MS / 1000} s; the prediction id is ${id}.`);
}

function resultCard(file) {
  const url = URL.createObjectURL(file);
  previews.add(url);
  const image = el("img", { src: url, alt: `Preview of ${file.name}` });
  const preview = el("div", { class: "result__preview" }, image);
  image.addEventListener("error", () => replace(preview, el("span", { class: "result__no-preview", text: "No preview" })));
  const status = el("p", { class: "result__status", text: "Predicting…" });
  const body = el("div", { class: "result__body" }, el("h3", { class: "result__name", text: file.name }), status);
  const root = el("li", { class: "result", "aria-busy": "true" }, preview, body);
  return { root, body, status, preview, image, name: file.name };
}

function showAnswer(card, answer) {
  const label = answer.label === "malignant" ? "malignant" : "benign";
  card.root.dataset.label = label;
  const meta = el(
    "dl",
    { class: "meta" },
    el("div", {}, el("dt", { text: "Model" }), el("dd", { text: answer.model_version })),
    el("div", {}, el("dt", { text: "Time taken" }), el("dd", { text: duration(answer.latency_ms) })),
  );
  if (answer.domain?.available === false) {
    meta.append(el("div", {}, el("dt", { text: "Image check" }), el("dd", { text: "not available for this model" })));
  }
  if (answer.domain?.not_dermoscopy) {
    // The strong warning replaces the result: a probability for such an image means nothing.
    card.root.dataset.label = "not-dermoscopy";
    card.status.replaceWith(domainWarning("not_dermoscopy"), meta);
    return;
  }
  card.status.replaceWith(
    el("p", { class: `result__label badge badge--${label}` }, label === "malignant" ? "Malignant" : "Benign"),
    probabilityBar(answer.probability_malignant, answer.threshold, answer.threshold_collection),
    meta,
  );
  if (answer.domain?.unlike_training) card.body.append(domainWarning("unlike_training"));
  const retake = retakeHint(answer.quality);
  if (retake) card.body.append(retake);
  card.body.append(heatmapToggle(card, answer.id));
  const note = byId("predict-note");
  if (answer.note) {
    note.textContent = answer.note;
    note.hidden = false;
  }
}

// The answer's domain warnings in words a clinician uses (shared/serving/domain.py): the strong
// one replaces the result, the caution goes under it.
const DOMAIN_WARNINGS = {
  not_dermoscopy: {
    class: "result__domain result__domain--strong",
    role: "alert",
    title: "Not a dermatoscope image: ",
    text:
      "this looks like an ordinary photograph of the skin, or something else, not an image taken through a " +
      "dermatoscope. The model only judges dermatoscope images, so it gives no result for this one.",
  },
  unlike_training: {
    class: "result__domain",
    role: "note",
    title: "Read with caution: ",
    text:
      "this image differs from the dermatoscope images the model learnt from (another dermatoscope, lighting, " +
      "magnification or skin type), so the result is less certain than usual.",
  },
};

function domainWarning(name) {
  const warning = DOMAIN_WARNINGS[name];
  return el("p", { class: warning.class, role: warning.role }, el("strong", { text: warning.title }), warning.text);
}

// Why an image should be taken again, in words a clinician uses (shared/image_quality.py).
const RETAKE_REASONS = {
  blurred: "it looks out of focus or blurred",
  dark: "it is too dark",
  bright: "it is overexposed",
};

/** A "retake the image" hint when the answer's quality check says so; null otherwise. */
function retakeHint(quality) {
  if (!quality?.retake) return null;
  const reasons = [quality.blurred && RETAKE_REASONS.blurred, RETAKE_REASONS[quality.exposure]].filter(Boolean);
  return el(
    "p",
    { class: "result__retake", role: "note" },
    el("strong", { text: "Retake the image: " }),
    `${reasons.join(" and ")}, so this result means less. Take it again in focus, with the dermatoscope's light on.`,
  );
}

/**
 * A toggle that shows, in place of the preview, where the model found evidence of malignant
 * (GET /predictions/{id}/heatmap, drawn by a worker on the first request), and back.
 */
function heatmapToggle(card, id) {
  const preview = { src: card.image.src, alt: card.image.alt };
  const legend = el("p", {
    class: "result__heatmap-legend",
    hidden: true,
    text: "Coloured where the model found evidence of malignant: the more yellow and opaque, the stronger. It shows where the model looked, not whether it is right.",
  });
  const toggle = el("button", {
    type: "button",
    class: "button button--small result__heatmap-toggle",
    "aria-pressed": "false",
    text: "Show where the model looked",
  });
  let heatmap = null;
  toggle.addEventListener("click", async () => {
    if (toggle.getAttribute("aria-pressed") === "true") {
      showHeatmap(card, toggle, legend, null, preview);
      return;
    }
    toggle.disabled = true;
    try {
      if (!heatmap) {
        heatmap = await getImageUrl(`/predictions/${encodeURIComponent(id)}/heatmap`);
        previews.add(heatmap);
      }
      showHeatmap(card, toggle, legend, heatmap, preview);
    } catch (error) {
      legend.textContent = `No heat map: ${error.message}`;
      legend.classList.add("result__heatmap-legend--error");
      legend.hidden = false;
    } finally {
      toggle.disabled = false;
    }
  });
  return el("div", { class: "result__heatmap" }, toggle, legend);
}

/** The heat map at `url` in the card's preview, or (null) the preview of the file again. */
function showHeatmap(card, toggle, legend, url, preview) {
  card.image.src = url ?? preview.src;
  card.image.alt = url ? `Heat map of ${card.name}: where the model found evidence of malignant` : preview.alt;
  card.preview.classList.toggle("result__preview--heatmap", Boolean(url));
  toggle.setAttribute("aria-pressed", String(Boolean(url)));
  legend.classList.remove("result__heatmap-legend--error");
  legend.hidden = !url;
}

function showError(card, error) {
  card.root.dataset.label = "error";
  card.root.classList.add("result--error");
  const status = error.status ? ` (HTTP ${error.status})` : "";
  card.status.replaceWith(
    el("p", { class: "result__error" }, el("strong", { text: `Not predicted${status}: ` }), error.message),
  );
}

/**
 * The probability of malignant as a bar, with the threshold that decided marked on it: the
 * global one, or the own threshold of `collection` (the answer's `threshold_collection`).
 */
export function probabilityBar(probability, threshold, collection = null) {
  const which = collection ? `threshold of collection ${collection}` : "global threshold";
  const fill = el("div", { class: "probability__fill" });
  fill.style.width = `${Math.min(Math.max(probability, 0), 1) * 100}%`;
  const marker = el("div", { class: "probability__threshold" });
  marker.style.left = `${threshold * 100}%`;
  const above = probability >= threshold;
  return el(
    "div",
    { class: "probability" },
    el(
      "p",
      { class: "probability__caption" },
      "Probability of malignant ",
      el("strong", { class: "probability__value", text: percent(probability) }),
    ),
    el(
      "div",
      {
        class: `probability__bar${above ? " probability__bar--above" : ""}`,
        role: "img",
        "aria-label": `Probability of malignant ${percent(probability)}; ${which} ${percent(threshold)}`,
      },
      fill,
      marker,
    ),
    el(
      "p",
      { class: "probability__legend" },
      el("span", { class: "probability__key", "aria-hidden": "true" }),
      el("span", { class: "probability__threshold-used", text: `${which} ${percent(threshold)}` }),
    ),
  );
}
