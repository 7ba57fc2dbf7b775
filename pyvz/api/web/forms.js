// Forms that run an operation: the button waits while it runs, the outcome shows beside it
// (the command's message and exit code when it fails).

import { el, notice } from "./dom.js";

/** A <form> of `fields`; on submit, `action(values)` runs (values: name -> string, or a
 * boolean for checkboxes) and its text, or the error, is shown under the button. */
export function form(fields, submitText, action, props = {}) {
  const outcome = el("p", { class: "outcome", role: "status" });
  const submit = el("button", { type: "submit", class: props.danger ? "danger" : "primary" }, submitText);
  const node = el("form", { class: ["form", props.class], id: props.id, novalidate: props.novalidate },
    el("div", { class: "fields" }, fields), el("div", { class: "buttons" }, submit), outcome);
  node.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (props.disabled) return;
    const values = {};
    for (const item of node.elements) {
      if (!item.name) continue;
      values[item.name] = item.type === "checkbox" ? item.checked : item.value.trim();
    }
    submit.disabled = true;
    outcome.className = "outcome running";
    outcome.textContent = "working…";
    try {
      const done = await action(values, node);
      outcome.className = "outcome ok";
      outcome.textContent = done || "done";
    } catch (error) {
      outcome.className = "outcome error";
      outcome.textContent = String(error);
      if (props.noticeErrors) notice(String(error), "error");
    } finally {
      submit.disabled = !!props.disabled;
    }
  });
  if (props.disabled) {
    submit.disabled = true;
    submit.title = "your role may not do this";
  }
  return node;
}

export function checkbox(name, text, checked = false) {
  return el("label", { class: "check" }, el("input", { type: "checkbox", name, checked }), " ", text);
}

/** Only the fields given a value, as API params. */
export function given(values, names) {
  const params = {};
  for (const name of names) if (values[name]) params[name] = values[name];
  return params;
}

export function words(text) {
  return text ? text.split(/[\s,]+/).filter(Boolean) : [];
}
