// Credentials. The console keeps the admin key (or a room admin token) in
// localStorage so new tabs stay signed in; a field user's token lives only in
// its own tab. Links carry credentials in the URL fragment (#key=, #token=),
// which browsers never send to a server.

const STORE = "vigil.console.credential";

/** { kind: "admin", secret } | { kind: "token", secret, claims } | { kind: "open" } */
export function tokenCredential(token) {
  return { kind: "token", secret: token, claims: claimsOf(token) };
}

/** The claims inside a participant token (not verified: the server does that). */
export function claimsOf(token) {
  const payload = token.split(".")[1];
  if (!payload) throw new Error("This is not a Vigil token.");
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(json);
  } catch {
    throw new Error("This is not a Vigil token.");
  }
}

/** The admin key or a token pasted by a person. */
export function parseSecret(text) {
  const secret = text.trim();
  return secret.split(".").length === 3 ? tokenCredential(secret) : { kind: "admin", secret };
}

/** A credential passed in the link (#key= or #token=), removed from the address bar. */
export function takeFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get("key");
  const token = params.get("token");
  if (!key && !token) return null;
  history.replaceState(null, "", location.pathname + location.search);
  return key ? { kind: "admin", secret: key } : tokenCredential(token);
}

export const consoleCredential = {
  load() {
    try {
      return JSON.parse(localStorage.getItem(STORE));
    } catch {
      return null;
    }
  },
  save(credential) {
    localStorage.setItem(STORE, JSON.stringify(credential));
  },
  clear() {
    localStorage.removeItem(STORE);
  },
};

/** Whether a token credential has expired (by its own claim). */
export function expired(credential) {
  return credential?.kind === "token" && credential.claims.exp * 1000 < Date.now();
}
