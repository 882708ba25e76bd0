// The field user's page (the join link): pick camera and microphone,
// publish with WHIP, see one's own preview and connection state, play the
// dispatcher when called, and stop for good when hung up.
//
// A dropped connection or a server restart does not end it: it goes live
// again by itself (WHIP, with backoff; the same token takes its stream
// over if the server still holds the old session) and says "reconnecting…"
// meanwhile. Only a hang-up, the room's deletion, leaving, or another page
// taking the stream over stop it for good. Its event feed starts with the
// page, so a link to a deleted room says so before offering to go live,
// and the page says when the dispatcher muted the person's camera or
// microphone.

import { CallEndReason, Code, LeaveReason, SessionRole, TrackKind, connect, followEvents } from "../api.js";
import { claimsOf } from "../auth.js";
import { errorText, h, replace, sleep } from "../dom.js";
import { Backoff } from "../retry.js";
import { HttpError, Player, publish, retriable } from "../whip.js";

const TOKEN_KEY = "vigil.join.token";
/** How long a `disconnected` publishing connection is given before going live anew. */
const DISCONNECTED_MS = 5000;

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
    this.claims = claims;
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
    this.remoteNotice = h("div", { class: "notice", hidden: true, "data-testid": "call-notice" });
    this.callNote = h("p", { class: "call", hidden: true, "data-testid": "call-note" });
    this.state = h("p", { class: "state", role: "status", "data-testid": "status", "data-state": "idle" }, "Not live");
    this.error = h("p", { class: "error", role: "alert", "data-testid": "join-error" });
    this.banner = h("p", { class: "banner offline", role: "status", hidden: true, "data-testid": "server-banner" }, "Server unreachable: reconnecting…");
    this.goLive = h("button", { type: "submit", "data-testid": "go-live" }, "Go live");
    this.leave = h("button", { type: "button", class: "danger", hidden: true, onclick: () => this.end("You left. You can close this page.", "left") }, "Leave");
    this.session = null;
    this.call = null;
    this.stream = null;
    // Whether the person went live (and the page keeps them live).
    this.started = false;
    this.reconnecting = false;
    // The dispatcher's mutes of this person's tracks: TrackKind -> muted.
    this.muted = new Map();
    // Earlier sessions of this page the server may still hold: their
    // ParticipantLeft is still to come and is not about the current one.
    this.staleSessions = 0;
    // The current session's ParticipantJoined has yet to come on the feed.
    // A publisher's leave before it is about an earlier session: when this
    // page takes the stream over (the same link in a new tab), the server
    // ends the old session (REPLACED) before this one joins, and that
    // leave may reach the feed after the WHIP answer did.
    this.joinPending = false;
    // The server said the current session ended (no leave of it to expect).
    this.sessionGone = false;
    addEventListener("pagehide", () => {
      if (this.started) this.end("You left.", "left");
    });
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
    this.videos = h("section", { class: "videos" }, this.callNote, h("div", { class: "remote-wrap" }, this.remote, this.remoteNotice), this.own);
    replace(this.app, this.banner, h("main", { class: "field" }, form, this.videos));
    // With a token the feed starts now: it checks that the room still exists.
    if (this.claims) this.follow(this.claims.sub);
    this.preview();
  }

  follow(identity) {
    this.stopEvents = followEvents(
      this.api,
      { room: this.room, identity },
      {
        onEvent: (event) => this.onEvent(event),
        onState: (state) => {
          if (state === "reconnecting") this.banner.hidden = this.ended;
          if (state === "live" || state === "failed") this.banner.hidden = true;
        },
        onError: (e) => {
          if (e.code === Code.NotFound) this.end(`Room ${this.room} is closed: this link does not work any more. Ask the dispatcher for a new one.`, "room-closed");
          else this.error.textContent = `Live updates stopped: ${errorText(e)}`;
        },
      },
    );
  }

  /** Opens the chosen devices and fills the pickers. */
  async preview() {
    if (this.ended) return;
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    const pick = (select) => (select.value ? { deviceId: { exact: select.value } } : true);
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: pick(this.camera), audio: pick(this.mic) });
    } catch (e) {
      this.stream = null;
      const why = e.name === "NotAllowedError" ? "Camera and microphone access was denied. Allow it in the browser's site settings, then reload." : `No camera or microphone available (${e.name}: ${e.message}).`;
      this.error.textContent = why;
      this.goLive.disabled = true;
      return;
    }
    if (this.ended) {
      // Closed while the devices opened: give them back at once.
      for (const track of stream.getTracks()) track.stop();
      return;
    }
    this.stream = stream;
    this.error.textContent = "";
    this.goLive.disabled = this.started;
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
    if (!this.name.reportValidity() || !this.stream || this.ended) return;
    this.identity = this.name.value;
    this.name.readOnly = true;
    this.goLive.disabled = true;
    this.setState("connecting", "Connecting…");
    try {
      await this.publishOnce();
    } catch (e) {
      // Refused: said next to the button, which works again.
      if (!retriable(e)) throw e;
      // The server is restarting or out of reach: keep trying.
      this.started = true;
      this.reconnect();
    }
    this.started = true;
    this.goLive.hidden = true;
    this.leave.hidden = false;
    if (!this.stopEvents) this.follow(this.identity);
  }

  /** One WHIP session; it becomes the current one. */
  async publishOnce() {
    const endpoint = new URL(`/whip/${encodeURIComponent(this.room)}/${encodeURIComponent(this.identity)}`, location.origin).href;
    let session = null;
    // Its join comes on the feed, if the feed is already following.
    this.joinPending = Boolean(this.stopEvents);
    session = await publish(endpoint, this.token, this.stream, {
      onState: (state) => {
        if (session && session === this.session) this.publishState(state);
      },
    });
    if (this.ended) return session.close();
    this.session = session;
    this.sessionGone = false;
    // A new session's tracks start unmuted.
    this.muted.clear();
    this.publishState(session.pc.connectionState);
  }

  /** The current session's connection state. */
  publishState(state) {
    if (this.ended || this.reconnecting) return;
    clearTimeout(this.lostTimer);
    if (state === "connected") {
      this.showLive();
    } else if (state === "disconnected") {
      this.setState("reconnecting", "Connection unstable: reconnecting…");
      this.lostTimer = setTimeout(() => this.reconnect(), DISCONNECTED_MS);
    } else if (state === "failed" || state === "closed") {
      this.setState("reconnecting", "Connection lost: reconnecting…");
      // A moment for the event that may say why (hung up, room closed,
      // another page took over), which would stop this page instead.
      this.lostTimer = setTimeout(() => this.reconnect(), 1000);
    }
  }

  /** Goes live again, with backoff, until it works or something final happens. */
  async reconnect() {
    if (this.ended || this.reconnecting) return;
    this.reconnecting = true;
    clearTimeout(this.lostTimer);
    const old = this.session;
    this.session = null;
    if (old) {
      // The server may still hold it: this DELETE ends it, or the next
      // WHIP takes it over; either way its leave is still to come.
      if (!this.sessionGone) this.staleSessions += 1;
      old.close();
    }
    const backoff = new Backoff();
    let why = "";
    while (!this.ended) {
      this.setState("reconnecting", `Connection lost: reconnecting…${why}`);
      try {
        await this.publishOnce();
        break;
      } catch (e) {
        if (this.ended) break;
        if (!retriable(e)) {
          this.reconnecting = false;
          return this.refused(e);
        }
        why = e instanceof HttpError ? ` (${e.message})` : " (the server cannot be reached)";
        this.setState("reconnecting", `Connection lost: reconnecting…${why}`);
        await sleep(backoff.next((e.retryAfter || 0) * 1000));
      }
    }
    this.reconnecting = false;
    if (this.session) this.publishState(this.session.pc.connectionState);
  }

  onEvent(event) {
    const { case: kind, value } = event.kind;
    if (kind === "callRequested" && value.callee === this.identity) this.answer(value);
    // The server owns the call: when it says the call ended, it ended.
    // Its player is closed too (DELETE), so no session waits out the grace.
    if (kind === "callEnded" && value.callee === this.identity) {
      this.endCall(value.reason === CallEndReason.CALLER_LEFT ? `The call ended: ${value.caller} left.` : "The call ended.", true);
    }
    if (kind === "roomDeleted") this.end("The room was closed. You can close this page.", "room-closed");
    if (kind === "historyGap") {
      // Lost events (a server restart): sessions from before are gone, and
      // the current one's join may be among what was lost.
      this.staleSessions = 0;
      this.joinPending = false;
    }
    if (kind === "participantJoined" && value.role === SessionRole.PUBLISHER && event.identity === this.identity) this.joinPending = false;
    if (kind === "trackMuted" && event.identity === this.identity) {
      this.muted.set(value.kind, value.muted);
      if (this.state.dataset.state === "live") this.showLive();
    }
    if (kind !== "participantLeft" || event.identity !== this.identity) return;
    if (value.reason === LeaveReason.HUNG_UP) return this.end("The dispatcher hung up. You can close this page.", "hung-up");
    if (value.reason === LeaveReason.ROOM_CLOSED) return this.end("The room was closed. You can close this page.", "room-closed");
    if (value.role === SessionRole.VIEWER) {
      if (value.reason === LeaveReason.PUBLISHER_GONE || value.reason === LeaveReason.CALL_ENDED) this.endCall("The call ended.");
      if (value.reason === LeaveReason.SERVER_SHUTDOWN) this.endCall("The call ended: the server restarted.");
      return;
    }
    if (!this.started) return;
    if (this.joinPending || this.staleSessions > 0) {
      // The leave of a session this page already replaced, or of the one
      // it took over from another page: not of the current session.
      if (this.staleSessions > 0) this.staleSessions -= 1;
      return;
    }
    if (value.reason === LeaveReason.REPLACED) {
      return this.end("Your camera went live from another page or device with this link, so this page stopped.", "replaced");
    }
    // The server ended the current session (timed out, restarting): live again.
    this.sessionGone = true;
    this.reconnect();
  }

  /** "Live", and whether the dispatcher muted the person's camera or microphone. */
  showLive() {
    const video = this.muted.get(TrackKind.VIDEO);
    const audio = this.muted.get(TrackKind.AUDIO);
    let text = "Live: the dispatcher can see you";
    if (video && audio) text = "Live, but the dispatcher muted your camera and microphone: they can neither see nor hear you";
    else if (video) text = "Live, but the dispatcher turned your camera off: they can hear you, not see you";
    else if (audio) text = "Live: the dispatcher can see you, but muted your microphone: they cannot hear you";
    this.setState("live", text);
    this.state.toggleAttribute("data-muted", Boolean(video || audio));
  }

  /** The dispatcher calls: play their stream, with sound, until the call ends. */
  answer({ caller, whepPath }) {
    if (this.call || this.ended) return;
    this.callNote.textContent = `${caller} is calling…`;
    this.callNote.hidden = false;
    this.remote.hidden = false;
    this.videos.classList.add("in-call");
    let heard = false;
    this.call = new Player(new URL(whepPath, location.origin).href, this.token, this.remote, {
      onState: (state, error) => {
        if (state === "failed") return this.endCall(`Cannot play the call: ${errorText(error)}`);
        const away = state === "frozen" || state === "retrying" || (state === "waiting" && heard);
        this.remoteNotice.hidden = !away;
        replace(this.remoteNotice, h("strong", {}, "reconnecting…"), h("span", {}, `${caller}'s picture stopped`));
        if (state !== "playing") return;
        this.callNote.textContent = `${caller} is calling: you can see and hear them.`;
        if (heard) return;
        heard = true;
        this.remote.play().catch(() => {
          this.callNote.textContent = `${caller} is calling: tap the video to hear them.`;
          this.remote.addEventListener("click", () => this.remote.play(), { once: true });
        });
      },
    });
  }

  /** Stops playing the call; `leaving` also ends its session on the server. */
  endCall(note, leaving = false) {
    if (!this.call) return;
    // Otherwise the server already ended it: nothing to DELETE.
    if (!leaving) this.call.lost();
    this.call.close();
    this.call = null;
    this.remote.srcObject = null;
    this.remote.hidden = true;
    this.remoteNotice.hidden = true;
    this.videos.classList.remove("in-call");
    this.callNote.textContent = note;
  }

  /** Stops everything for good: no reconnecting after a hang-up. */
  end(message, state) {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.lostTimer);
    this.stopEvents?.();
    this.endCall("", state === "left");
    this.callNote.hidden = true;
    // After a hang-up the server ended the session already (the DELETE
    // finds nothing), unless this page had gone live again meanwhile.
    this.session?.close();
    this.session = null;
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.own.srcObject = null;
    this.goLive.hidden = true;
    this.leave.hidden = true;
    this.banner.hidden = true;
    this.setState(state, message);
  }

  /** A refusal while going live again: final. */
  refused(e) {
    if (e instanceof HttpError && e.status === 404) return this.end("The room was closed. You can close this page.", "room-closed");
    this.end(`Cannot go live again: ${errorText(e)}`, "refused");
  }

  setState(state, text) {
    this.state.dataset.state = state;
    this.state.removeAttribute("data-muted");
    this.state.textContent = text;
  }

  fail(e) {
    if (e instanceof HttpError && e.status === 404) return this.end(`Room ${this.room} is closed: this link does not work any more. Ask the dispatcher for a new one.`, "room-closed");
    this.error.textContent = errorText(e);
    if (!this.session && !this.reconnecting) {
      this.goLive.disabled = false;
      this.name.readOnly = Boolean(this.token);
      this.setState("idle", "Not live");
    }
  }
}
