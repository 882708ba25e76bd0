// The signed-in console: sign-in, then the rooms page or a room's wall.

import { Code, ConnectError, connect } from "../api.js";
import { consoleCredential, expired, parseSecret, takeFromFragment } from "../auth.js";
import { errorText, h, replace } from "../dom.js";
import { roomsPage } from "./rooms.js";
import { wallPage } from "./wall.js";

export async function consolePage(app, path) {
  const fromLink = takeFromFragment();
  if (fromLink) consoleCredential.save(fromLink);
  let credential = consoleCredential.load();
  if (expired(credential)) {
    consoleCredential.clear();
    return signIn(app, path, "Your token has expired: sign in again.");
  }
  if (!credential) {
    // A server started with --insecure-no-auth needs no credential.
    const open = await check({ kind: "open" });
    if (open !== null) return signIn(app, path);
    credential = { kind: "open" };
  }
  const problem = await check(credential);
  if (problem !== null) {
    consoleCredential.clear();
    return signIn(app, path, problem);
  }
  route(app, path, credential);
}

function route(app, path, credential) {
  if (credential.kind === "token") {
    const { claims } = credential;
    if (!claims.grants?.admin) {
      // A field user's token: their page is the join page.
      location.replace(`/join/${encodeURIComponent(claims.room)}#token=${encodeURIComponent(credential.secret)}`);
      return;
    }
    if (path[0] !== "rooms" || path[1] !== claims.room) {
      location.replace(`/console/rooms/${encodeURIComponent(claims.room)}`);
      return;
    }
  }
  const api = connect(credential);
  const signOut = () => {
    consoleCredential.clear();
    location.href = "/console/";
  };
  if (path[0] === "rooms" && path[1]) wallPage(app, { api, credential, room: path[1], signOut });
  else roomsPage(app, { api, credential, signOut });
}

/** null if the credential works, else what to tell the person. */
async function check(credential) {
  const api = connect(credential);
  try {
    if (credential.kind === "token") await api.rooms.getRoom({ name: credential.claims.room });
    else await api.rooms.listRooms({});
    return null;
  } catch (e) {
    const error = ConnectError.from(e);
    if (error.code === Code.Unauthenticated || error.code === Code.PermissionDenied) {
      return credential.kind === "open" ? "" : `Not accepted: ${error.rawMessage}`;
    }
    if (error.code === Code.NotFound) return `Room ${credential.claims?.room} does not exist (any more).`;
    return `Cannot reach the control API: ${errorText(e)}`;
  }
}

function signIn(app, path, problem = "") {
  const input = h("input", {
    type: "password",
    name: "secret",
    autocomplete: "current-password",
    placeholder: "admin key or participant token",
    required: true,
    "data-testid": "secret",
  });
  const error = h("p", { class: "error", role: "alert", "data-testid": "signin-error" }, problem);
  const form = h(
    "form",
    {
      class: "card signin",
      onsubmit: async (event) => {
        event.preventDefault();
        let credential;
        try {
          credential = parseSecret(input.value);
        } catch (e) {
          error.textContent = errorText(e);
          return;
        }
        const refused = await check(credential);
        if (refused !== null) {
          error.textContent = refused || "Not accepted.";
          return;
        }
        consoleCredential.save(credential);
        route(app, path, credential);
      },
    },
    h("h1", {}, "Vigil"),
    h("p", {}, "Sign in with the admin key (printed when vigil starts, also in ", h("code", {}, "data/admin.key"), ") or a participant token."),
    input,
    h("button", { type: "submit" }, "Sign in"),
    error,
  );
  replace(app, form);
  input.focus();
}
