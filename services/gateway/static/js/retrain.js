// Retrain tab: add labelled images to a collection of the dataset, start a training job, follow
// it (stage, epoch, time left) to the gate.

import { config, getJson, write } from "./api.js";
import { byId, el, replace, setStatus } from "./dom.js";
import { gateDecision } from "./gate.js";

const POLL_MS = 1000;
const FINISHED = new Set(["promoted", "rejected", "failed"]);
let polling = 0; // id of the current poll loop; a new job stops the old loop

export function initRetrain() {
  byId("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    uploadLabelled();
  });
  byId("train-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startTraining();
  });
}

let shown = false;

/** On the first visit: set limits from the config, and pick up the latest job. */
export async function showRetrain() {
  if (shown) return;
  shown = true;
  const { max_training_epochs: maxEpochs } = await config();
  if (maxEpochs) byId("train-epochs").max = String(maxEpochs);
  try {
    const { jobs } = await getJson("/training-jobs");
    if (jobs && jobs.length) follow(jobs[0]);
  } catch {
    // No job history to show is not worth an error message here.
  }
}

// --- uploads -------------------------------------------------------------------------------

/** Split files into requests the server accepts: by count and by total bytes. */
function batches(files, maxFiles, maxBytes) {
  const result = [];
  let current = [];
  let bytes = 0;
  for (const file of files) {
    if (current.length && (current.length >= maxFiles || bytes + file.size > maxBytes)) {
      result.push(current);
      current = [];
      bytes = 0;
    }
    current.push(file);
    bytes += file.size;
  }
  if (current.length) result.push(current);
  return result;
}

async function uploadLabelled() {
  const status = byId("upload-status");
  const label = byId("upload-form").querySelector('input[name="label"]:checked')?.value;
  const files = [...byId("upload-files").files];
  const collectionInput = byId("upload-collection");
  const patientInput = byId("upload-patient");
  const collection = collectionInput.value.trim() || collectionInput.defaultValue;
  const patient = patientInput.value.trim();
  if (!label) return setStatus(status, "Choose a label: benign or malignant.", "error");
  if (!files.length) return setStatus(status, "Choose one or more images to add.", "error");
  collectionInput.value = collection;
  patientInput.value = patient;
  if (!collectionInput.checkValidity()) {
    collectionInput.focus();
    return setStatus(
      status,
      "The collection must be 1 to 40 characters of a-z, 0-9, “_” and “-”, starting with a letter or digit.",
      "error",
    );
  }
  if (!patientInput.checkValidity()) {
    patientInput.focus();
    return setStatus(status, "The patient must be 1 to 64 characters of letters, digits, “_”, “.”, “:” and “-”.", "error");
  }

  const settings = await config();
  const maxFiles = settings.max_dataset_files_per_request || 200;
  const maxBytes = (settings.max_files_per_request || 32) * (settings.max_upload_bytes || 10 * 2 ** 20);
  const submit = byId("upload-submit");
  submit.disabled = true;
  setStatus(status, `Uploading ${files.length} image${files.length === 1 ? "" : "s"}…`);
  const totals = { added: 0, heldOut: 0, duplicates: 0, rejected: 0, files: [], collection, external: false, queued: false };
  try {
    for (const batch of batches(files, maxFiles, maxBytes)) {
      const form = new FormData();
      form.append("label", label);
      form.append("collection", collection);
      if (patient) form.append("patient", patient);
      batch.forEach((file) => form.append("file", file, file.name));
      const answer = await write("POST", "/datasets/uploads", form);
      totals.added += answer.added;
      totals.heldOut += answer.held_out ?? 0;
      totals.duplicates += answer.duplicates;
      totals.rejected += answer.rejected;
      totals.files.push(...answer.files);
      totals.collection = answer.collection ?? collection;
      totals.external = Boolean(answer.external);
      // The gateway stages added images; the trainer imports them into the dataset.
      totals.queued ||= answer.import === "queued";
    }
    const { added, heldOut, duplicates, rejected } = totals;
    // The held-out part is never trained on: it is where the collection's own metrics come from.
    const held = totals.external
      ? "an external collection: all held out, never trained on"
      : `${heldOut} of them held out for testing`;
    const summary = `${added} added to ${totals.collection} as ${label} (${held}), ${duplicates} already in the dataset, ${rejected} rejected`;
    const importing = totals.queued ? " The trainer adds them to the dataset in a moment." : "";
    setStatus(status, `Done: ${summary}.${importing}`, rejected ? "info" : "success");
  } catch (error) {
    setStatus(status, `Upload failed: ${error.message}`, "error");
  } finally {
    submit.disabled = false;
    showUploadTotals(totals);
  }
}

function showUploadTotals(totals) {
  byId("upload-stats").hidden = false;
  byId("upload-added").textContent = totals.added;
  byId("upload-held-out").textContent = totals.heldOut;
  byId("upload-duplicates").textContent = totals.duplicates;
  byId("upload-rejected").textContent = totals.rejected;
  const notAdded = totals.files.filter((file) => file.status !== "added");
  replace(
    byId("upload-files-list"),
    notAdded.map((file) =>
      el(
        "li",
        { class: `file-outcome file-outcome--${file.status}` },
        el("strong", { text: file.filename || "(no name)" }),
        ` — ${file.status}`,
        file.reason ? `: ${file.reason}` : file.status === "duplicate" ? ": already in the dataset" : "",
      ),
    ),
  );
}

// --- training ------------------------------------------------------------------------------

async function startTraining() {
  const status = byId("train-status");
  const epochsInput = byId("train-epochs");
  if (!epochsInput.checkValidity()) {
    epochsInput.focus();
    return setStatus(status, `Epochs must be a whole number from 1 to ${epochsInput.max || "the maximum"}.`, "error");
  }
  const epochs = epochsInput.value ? Number(epochsInput.value) : undefined;
  const submit = byId("train-submit");
  submit.disabled = true;
  setStatus(status, "Queueing the training job…");
  try {
    const job = await write("POST", "/training-jobs", epochs ? { epochs } : undefined);
    follow(job);
  } catch (error) {
    submit.disabled = false;
    setStatus(status, `Could not start retraining: ${error.message}`, "error");
  }
}

/** Show `job`, and poll it until it finishes. */
async function follow(job) {
  const loop = ++polling;
  let current = job;
  replace(byId("train-gate"));
  for (;;) {
    renderJob(current);
    if (FINISHED.has(current.status)) return;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    if (loop !== polling) return;
    try {
      current = await getJson(`/training-jobs/${encodeURIComponent(current.id)}`);
    } catch (error) {
      setStatus(byId("train-status"), `Lost contact with the server (${error.message}); retrying…`, "error");
    }
  }
}

const STATUS_TEXT = {
  queued: "Queued: waiting for the trainer…",
  running: "Training…",
  evaluating: "Evaluating the candidate on every collection's held-out part…",
  promoted: "Finished: the candidate passed the gate and is now in production.",
  rejected: "Finished: the candidate did not pass the gate; production is unchanged.",
  failed: "Training failed.",
};

function renderJob(job) {
  const finished = FINISHED.has(job.status);
  byId("train-submit").disabled = !finished;
  const kind = job.status === "failed" ? "error" : job.status === "promoted" ? "success" : "info";
  const error = job.error ? ` ${job.error}` : "";
  // The gateway answers a request made while a job waits with that job: one waiting run is enough.
  const waiting = job.already_queued ? " (a job was already waiting; this is it)" : "";
  setStatus(byId("train-status"), `Job ${job.id}: ${STATUS_TEXT[job.status] || job.status}${waiting}${error}`, kind);

  byId("train-progress-block").hidden = false;
  const bar = byId("train-progress");
  const fraction = progressFraction(job);
  if (fraction === null) bar.removeAttribute("value");
  else bar.value = Math.round(fraction * 100);
  byId("train-progress-label").textContent = `Progress${fraction === null ? "" : `: ${Math.round(fraction * 100)}%`}`;
  byId("train-progress-detail").textContent = progressDetail(job);
  const eta = byId("train-eta");
  eta.hidden = finished || job.status === "queued";
  eta.textContent = `Time left: ${timeLeft(job.progress?.eta_seconds)}`;

  if (job.gate) replace(byId("train-gate"), gateDecision(job.gate, job.candidate_version));
}

const isNumber = (value) => typeof value === "number" && Number.isFinite(value);

/**
 * 0..1, or null when the trainer has not said how far it is. From the time spent and the
 * trainer's estimate of the time left when it gives one, else from the epochs, with
 * evaluation as the last tenth.
 */
function progressFraction(job) {
  if (FINISHED.has(job.status)) return 1;
  if (job.status === "queued") return 0;
  const { epoch, epochs, eta_seconds: eta, elapsed_seconds: elapsed } = job.progress || {};
  if (isNumber(eta) && isNumber(elapsed) && elapsed + eta > 0) return Math.min(elapsed / (elapsed + eta), 0.99);
  if (job.status === "evaluating") return 0.95;
  if (!epochs) return null;
  return Math.min(epoch / epochs, 1) * 0.9;
}

// The trainer's stages, as the progress line names them.
const STAGE_TEXT = {
  loading: "Loading the images",
  "caching features": "Caching features",
  training: "Training",
  evaluating: "Evaluating the candidate",
  publishing: "Publishing the candidate",
};

/** The trainer's estimate in minutes; "estimating…" until it has one. */
function timeLeft(seconds) {
  if (!isNumber(seconds)) return "estimating…";
  if (seconds < 60) return "under a minute";
  const minutes = Math.round(seconds / 60);
  return `about ${minutes} minute${minutes === 1 ? "" : "s"}`;
}

function progressDetail(job) {
  const parts = [];
  const progress = job.progress || {};
  const running = !FINISHED.has(job.status);
  if (progress.stage && running) parts.push(STAGE_TEXT[progress.stage] || progress.stage);
  // Epoch 0 is the stages before training (loading, caching): no epoch has run yet.
  if (progress.epochs && progress.epoch) parts.push(`epoch ${progress.epoch} of ${progress.epochs}`);
  const metrics = progress.metrics || {};
  if (metrics.val_auc !== undefined && metrics.val_auc !== null) parts.push(`validation AUC ${Number(metrics.val_auc).toFixed(3)}`);
  if (metrics.loss !== undefined && metrics.loss !== null) parts.push(`loss ${Number(metrics.loss).toFixed(3)}`);
  const { started_at: started, finished_at: finished } = job.timings || {};
  const elapsed = started ? (finished || Date.now() / 1000) - started : running ? progress.elapsed_seconds : undefined;
  if (isNumber(elapsed)) parts.push(`${Math.round(elapsed)} s ${running ? "elapsed" : "in all"}`);
  return parts.join(" · ");
}
