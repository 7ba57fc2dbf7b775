// Building the page with DOM calls only. Text (above all anything that comes from a CT:
// host names, descriptions, names, command output) goes in as text nodes, never as HTML,
// so markup in it shows as the characters it is made of. There is no innerHTML here.

const SVG = "http://www.w3.org/2000/svg";

function apply(node, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "style" || /^on[a-z]/.test(key) && typeof value !== "function") {
      throw new Error(`el(): ${key} is not allowed (the CSP forbids inline styles and handlers)`);
    }
    if (key === "class") node.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "value" || key === "checked" || key === "disabled" || key === "selected") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

function add(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** el("td", {class: "x"}, "text", otherNode): an element; strings become text nodes. */
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  apply(node, props);
  add(node, children);
  return node;
}

export function svg(tag, props, ...children) {
  const node = document.createElementNS(SVG, tag);
  apply(node, props);
  add(node, children);
  return node;
}

export function clear(node, ...children) {
  node.replaceChildren();
  add(node, children);
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** A labelled form field: <label>Text <input …></label>. */
export function field(label, input, hint) {
  return el("label", { class: "field" }, el("span", { class: "label" }, label), input,
    hint ? el("small", { class: "hint" }, hint) : null);
}

export function input(name, props = {}) {
  return el("input", { name, id: props.id || undefined, autocomplete: "off", ...props });
}

export function select(name, options, chosen) {
  return el("select", { name }, options.map(([value, text]) =>
    el("option", { value, selected: value === chosen }, text)));
}

export function button(text, onclick, props = {}) {
  return el("button", { type: "button", onclick, ...props }, text);
}

/** Ask before something that cannot be undone; resolves true on "yes". */
export function confirmDialog(text, yes = "Yes") {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = yes;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

/** A short message at the top; errors stay until dismissed. */
export function notice(text, kind = "info") {
  const box = el("div", { class: ["notice", kind], role: kind === "error" ? "alert" : "status" },
    el("span", {}, text));
  box.append(button("×", () => box.remove(), { class: "close", "aria-label": "dismiss" }));
  $("#notices").append(box);
  if (kind !== "error") setTimeout(() => box.remove(), 5000);
  return box;
}

export function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let n = Number(value), i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.floor(seconds), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
  const m = Math.floor(s % 3600 / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}
