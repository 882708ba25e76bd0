// The field user's page (the join link): pick camera and microphone,
// publish with WHIP, see one's own preview and connection state, play the
// dispatcher when called, and stop for good when hung up.

import { LeaveReason, SessionRole, connect, followEvents } from "../api.js";
import { claimsOf } from "../auth.js";
import { errorText, h, replace } from "../dom.js";
import { publish, play } from "../whip.js";

const TOKEN_KEY = "vigil.join.token";

export function joinPage(app, room) {
  // The token comes in the link's fragment; keep it for reloads of this tab only.
  const fragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fragment) {
    sessionStorage.setItem(TOKEN_KEY, fragment);
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  let claims = null;
  try {
    claims = token ? claimsOf(token) : null;
  } catch (e) {
    return replace(app, h("p", { class: "banner error", role: "alert" }, errorText(e)));
  }
  if (claims && claims.room !== room) {
    return replace(app, h("p", { class: "banner error", role: "alert" }, `This link's token is for room ${claims.room}, not ${room}.`));
  }
  if (claims && claims.exp * 1000 < Date.now()) {
    return replace(app, h("p", { class: "banner error", role: "alert", "data-testid": "join-error" }, "This join link has expired: ask the dispatcher for a new one."));
  }
  new FieldUser(app, room, token, claims).render();
}

class FieldUser {
  constructor(app, room, token, claims) {
    this.app = app;
    this.room = room;
    this.token = token;
    this.api = connect(token ? { kind: "token", secret: token } : { kind: "open" });
    this.name = h("input", {
      name: "name",
      required: true,
      pattern: "[A-Za-z0-9_.\\-]{1,64}",
      value: claims?.sub ?? new URLSearchParams(location.search).get("name") ?? "",
      readOnly: Boolean(claims),
      "data-testid": "name",
    });
    this.camera = h("select", { name: "camera", onchange: () => this.preview() });
    this.mic = h("select", { name: "mic", onchange: () => this.preview() });
    this.own = h("video", { autoplay: true, playsInline: true, muted: true, class: "own", "data-testid": "own-video" });
    this.remote = h("video", { autoplay: true, playsInline: true, class: "remote", hidden: true, "data-testid": "call-video" });
    this.callNote = h("p", { class: "call", hidden: true, "data-testid": "call-note" });
    this.state = h("p", { class: "state", role: "status", "data-testid": "status", "data-state": "idle" }, "Not live");
    this.error = h("p", { class: "error", role: "alert", "data-testid": "join-error" });
    this.goLive = h("button", { type: "submit", "data-testid": "go-live" }, "Go live");
    this.leave = h("button", { type: "button", class: "danger", hidden: true, onclick: () => this.end("You left. You can close this page.", "left") }, "Leave");
    this.session = null;
    this.call = null;
    this.stream = null;
  }

  render() {
    const form = h(
      "form",
      {
        class: "card join",
        onsubmit: (event) => {
          event.preventDefault();
          this.start().catch((e) => this.fail(e));
        },
      },
      h("h1", {}, `Join ${this.room}`),
      h("label", {}, "Your name", this.name),
      h("label", {}, "Camera", this.camera),
      h("label", {}, "Microphone", this.mic),
      h("div", { class: "row" }, this.goLive, this.leave),
      this.state,
      this.error,
    );
    this.videos = h("section", { class: "videos" }, this.callNote, this.remote, this.own);
    replace(this.app, h("main", { class: "field" }, form, this.videos));
    this.preview();
  }

  /** Opens the chosen devices and fills the pickers. */
  async preview() {
    if (this.ended) return;
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    const pick = (select) => (select.value ? { deviceId: { exact: select.value } } : true);
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video: pick(this.camera), audio: pick(this.mic) });
    } catch (e) {
      this.stream = null;
      const why = e.name === "NotAllowedError" ? "Camera and microphone access was denied. Allow it in the browser's site settings, then reload." : `No camera or microphone available (${e.name}: ${e.message}).`;
      this.error.textContent = why;
      this.goLive.disabled = true;
      return;
    }
    this.error.textContent = "";
    this.goLive.disabled = Boolean(this.session);
    this.own.srcObject = this.stream;
    const devices = await navigator.mediaDevices.enumerateDevices();
    const fill = (select, kind, current) => {
      replace(select, devices.filter((d) => d.kind === kind).map((d, i) => h("option", { value: d.deviceId, selected: d.deviceId === current }, d.label || `${kind} ${i + 1}`)));
    };
    fill(this.camera, "videoinput", this.stream.getVideoTracks()[0]?.getSettings().deviceId);
    fill(this.mic, "audioinput", this.stream.getAudioTracks()[0]?.getSettings().deviceId);
    // Switching devices while live: send the new tracks on the same session.
    for (const sender of this.session?.pc?.getSenders() ?? []) {
      const track = this.stream.getTracks().find((t) => t.kind === sender.track?.kind);
      if (track) await sender.replaceTrack(track);
    }
  }

  async start() {
    if (!this.name.reportValidity() || !this.stream) return;
    this.identity = this.name.value;
    this.name.readOnly = true;
    this.goLive.disabled = true;
    this.setState("connecting", "Connecting…");
    const endpoint = new URL(`/whip/${encodeURIComponent(this.room)}/${encodeURIComponent(this.identity)}`, location.origin).href;
    this.session = await publish(endpoint, this.token, this.stream, {
      onState: (state) => {
        if (this.ended) return;
        if (state === "connected") this.setState("live", "Live: the dispatcher can see you");
        else if (state === "failed" || state === "disconnected") this.setState("lost", "Connection lost: check your network, then reload to go live again");
      },
    });
    this.goLive.hidden = true;
    this.leave.hidden = false;
    addEventListener("pagehide", () => this.end("You left.", "left"));
    this.stopEvents = followEvents(this.api, { room: this.room, identity: this.identity }, { onEvent: (event) => this.onEvent(event), onError: (e) => this.fail(e) });
  }

  onEvent(event) {
    const { case: kind, value } = event.kind;
    if (kind === "callRequested" && value.callee === this.identity) this.answer(value);
    // The server owns the call: when it says the call ended, it ended.
    // Its player is closed too (DELETE), so no session waits out the grace.
    if (kind === "callEnded" && value.callee === this.identity) this.endCall("The call ended.", true);
    if (kind === "roomDeleted") this.end("The room was closed. You can close this page.", "room-closed");
    if (kind !== "participantLeft" || event.identity !== this.identity) return;
    if (value.reason === LeaveReason.HUNG_UP) this.end("The dispatcher hung up. You can close this page.", "hung-up");
    else if (value.reason === LeaveReason.ROOM_CLOSED) this.end("The room was closed. You can close this page.", "room-closed");
    else if (value.role === SessionRole.VIEWER && (value.reason === LeaveReason.PUBLISHER_GONE || value.reason === LeaveReason.CALL_ENDED)) this.endCall("The call ended.");
  }

  /** The dispatcher calls: play their stream, with sound. */
  async answer({ caller, whepPath }) {
    if (this.call || this.ended) return;
    this.callNote.textContent = `${caller} is calling: you can see and hear them.`;
    this.callNote.hidden = false;
    this.remote.hidden = false;
    this.videos.classList.add("in-call");
    this.abortCall = new AbortController();
    try {
      this.call = await play(new URL(whepPath, location.origin).href, this.token, this.remote, { signal: this.abortCall.signal });
      this.remote.play().catch(() => {
        this.callNote.textContent = `${caller} is calling: tap the video to hear them.`;
        this.remote.addEventListener("click", () => this.remote.play(), { once: true });
      });
    } catch (e) {
      if (!this.abortCall.signal.aborted) this.endCall(`Cannot play the call: ${errorText(e)}`);
    }
  }

  /** Stops playing the call; `leaving` also ends its session on the server. */
  endCall(note, leaving = false) {
    this.abortCall?.abort();
    if (leaving) this.call?.close();
    else this.call?.forget();
    this.call = null;
    this.remote.srcObject = null;
    this.remote.hidden = true;
    this.videos.classList.remove("in-call");
    this.callNote.textContent = note;
  }

  /** Stops everything for good: no reconnecting after a hang-up. */
  end(message, state) {
    if (this.ended) return;
    this.ended = true;
    this.stopEvents?.();
    this.endCall("", state === "left");
    this.callNote.hidden = true;
    // Hung up or room closed: the server already ended the sessions.
    if (state === "left") this.session?.close();
    else this.session?.forget();
    this.session = null;
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.own.srcObject = null;
    this.goLive.hidden = true;
    this.leave.hidden = true;
    this.setState(state, message);
  }

  setState(state, text) {
    this.state.dataset.state = state;
    this.state.textContent = text;
  }

  fail(e) {
    this.error.textContent = errorText(e);
    if (!this.session) {
      this.goLive.disabled = false;
      this.name.readOnly = Boolean(this.token);
      this.setState("idle", "Not live");
    }
  }
}
