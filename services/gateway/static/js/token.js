// The write token: kept in sessionStorage (gone when the tab closes), asked for in a dialog.

import { byId } from "./dom.js";

const KEY = "slc.writeToken";
const listeners = new Set();

export function storedToken() {
  return sessionStorage.getItem(KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
  listeners.forEach((listener) => listener(false));
}

function saveToken(token) {
  sessionStorage.setItem(KEY, token);
  listeners.forEach((listener) => listener(true));
}

/** Call `listener(hasToken)` whenever the token is saved or forgotten. */
export function onTokenChange(listener) {
  listeners.add(listener);
}

/** Ask for the token in a modal dialog. Resolves to the token, or null if cancelled. */
export function askForToken(reason) {
  const dialog = byId("token-dialog");
  const form = byId("token-form");
  const input = byId("token-input");
  const message = byId("token-dialog-message");
  message.textContent = reason || "This action changes data. Enter the write token the operator gave you.";
  message.dataset.kind = reason ? "error" : "info";
  input.value = "";
  return new Promise((resolve) => {
    const finish = (token) => {
      form.removeEventListener("submit", onSubmit);
      byId("token-cancel").removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      if (token) saveToken(token);
      resolve(token);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (token) finish(token);
      else input.focus();
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish(null);
    };
    form.addEventListener("submit", onSubmit);
    byId("token-cancel").addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel); // Escape
    dialog.showModal();
    input.focus();
  });
}
