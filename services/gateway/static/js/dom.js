// Building DOM without innerHTML: every string becomes a text node, so text from the server
// or from a file name is always shown, never run.

/**
 * Create an element. `attrs` keys: "class", "text", "hidden", "on<event>" (listener),
 * anything else becomes an attribute. Children are nodes or strings (text).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  applyAttrs(node, attrs);
  append(node, children);
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Same as `el`, for SVG elements. */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  applyAttrs(node, attrs);
  append(node, children);
  return node;
}

function applyAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace all children of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

export const byId = (id) => document.getElementById(id);

const hasValue = (value) => value !== null && value !== undefined && !Number.isNaN(value);

/** 0.8321 -> "83.2%"; missing -> "–". */
export function percent(value, digits = 1) {
  return hasValue(value) ? `${(value * 100).toFixed(digits)}%` : "–";
}

/** A number with fixed digits; missing -> "–". */
export function fixed(value, digits = 3) {
  return hasValue(value) ? Number(value).toFixed(digits) : "–";
}

/** Milliseconds, short: 41.2 -> "41 ms", 2300 -> "2.3 s". */
export function duration(ms) {
  if (!hasValue(ms)) return "–";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** Unix seconds or ISO text -> local date and time. */
export function dateTime(value) {
  if (!hasValue(value) || value === "") return "–";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** Show a message in a status element; `kind` is "info", "error" or "success". */
export function setStatus(node, message, kind = "info") {
  node.textContent = message || "";
  node.dataset.kind = kind;
}
