// Tiny DOM helpers: the console has no framework.

/** Creates an element: h("button", { class: "x", onclick: fn }, "label"). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A button that shows an error next to itself if its action fails. */
export function actionButton(label, action, attrs = {}) {
  const button = h("button", { type: "button", ...attrs }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await action();
    } catch (e) {
      toast(errorText(e), "error");
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** A copy-to-clipboard field. */
export function copyField(label, value, testid) {
  const input = h("input", { readOnly: true, value, "data-testid": testid });
  const copy = h("button", { type: "button", class: "secondary" }, "Copy");
  copy.addEventListener("click", async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(value);
      toast(`${label} copied`);
    } catch {
      document.execCommand("copy");
    }
  });
  return h("label", { class: "copy" }, h("span", {}, label), h("div", { class: "row" }, input, copy));
}

let toasts;
/** A short message at the bottom of the page; errors stay longer. */
export function toast(text, kind = "info") {
  toasts ??= document.body.appendChild(h("div", { class: "toasts", "aria-live": "polite" }));
  const item = toasts.appendChild(h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, text));
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 3000);
}

/** What to tell a person about an error (gRPC, WHIP/WHEP or media). */
export function errorText(e) {
  if (e && typeof e === "object" && "rawMessage" in e) return e.rawMessage || e.message; // ConnectError
  if (e instanceof Error) return e.message;
  return String(e);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** "1.2 Mbit/s" */
export function formatBitrate(bps) {
  if (!bps) return "0 kbit/s";
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`;
}

/** "14:03:07" */
export function formatTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}
