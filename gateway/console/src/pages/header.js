// The bar at the top of console pages.

import { h } from "../dom.js";

export function header({ title, credential, signOut, extra = [] }) {
  const who = credential.kind === "admin" ? "admin" : credential.kind === "open" ? "open server (no auth)" : credential.claims.sub;
  return h(
    "header",
    { class: "bar" },
    h("a", { class: "brand", href: "/console/" }, "Vigil"),
    h("h1", {}, title),
    h("div", { class: "spacer" }),
    ...extra,
    h("span", { class: "muted" }, who),
    credential.kind === "open" ? null : h("button", { type: "button", class: "secondary", onclick: signOut }, "Sign out"),
  );
}
