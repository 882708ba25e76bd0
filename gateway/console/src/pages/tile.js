// One stream on the wall: a WHEP player with the stream's identity, bitrate,
// resolution and frame rate, viewer count, alarm and mute badges, and the
// dispatcher's actions on it.

import { TrackKind } from "../api.js";
import { actionButton, errorText, formatBitrate, h, replace } from "../dom.js";
import { ALARM_NAMES } from "../describe.js";
import { InboundStats, play } from "../whip.js";

export class Tile {
  /**
   * `actions`: { mute(kind, muted), hangUp(), call(), endCall() } on this stream.
   * `participant`: its ListParticipants entry, if known.
   */
  constructor({ room, identity, token, participant, actions }) {
    this.identity = identity;
    this.alarms = new Set(participant?.activeAlarms ?? []);
    this.muted = new Map((participant?.tracks ?? []).map((t) => [t.kind, t.muted]));
    this.viewers = participant?.viewerCount ?? 0;
    // The server's state of the dispatcher's call to this participant:
    // null, "ringing" or "connected" (CallRequested / CallConnected /
    // CallEnded events).
    this.call = null;
    this.abort = new AbortController();

    this.video = h("video", { autoplay: true, playsInline: true, muted: true });
    this.status = h("span", { class: "status", "data-testid": "tile-status" }, "connecting");
    this.stats = h("span", { class: "stats", "data-testid": "tile-stats" });
    this.viewerBadge = h("span", { class: "viewers", title: "viewers" });
    this.badges = h("span", { class: "badges" });
    const listen = h("button", { type: "button", class: "secondary", "aria-pressed": "false", "data-action": "listen" }, "Listen");
    listen.addEventListener("click", () => {
      this.video.muted = !this.video.muted;
      listen.setAttribute("aria-pressed", String(!this.video.muted));
      listen.textContent = this.video.muted ? "Listen" : "Silence";
    });
    const muteButton = (kind, label) => {
      const button = actionButton(label, () => actions.mute(kind, !this.muted.get(kind)), { class: "secondary", "data-action": `mute-${label}` });
      return button;
    };
    this.muteVideo = muteButton(TrackKind.VIDEO, "video");
    this.muteAudio = muteButton(TrackKind.AUDIO, "audio");
    this.el = h(
      "article",
      { class: "tile", "data-testid": "tile", "data-identity": identity },
      h("div", { class: "media" }, this.video, h("div", { class: "overlay" }, h("strong", {}, identity), this.badges)),
      h("div", { class: "info" }, this.status, this.stats, this.viewerBadge),
      h(
        "div",
        { class: "actions" },
        listen,
        h("button", { type: "button", class: "secondary", "data-action": "fullscreen", onclick: () => this.el.requestFullscreen?.() }, "Fullscreen"),
        this.muteVideo,
        this.muteAudio,
        (this.callButton = actionButton("Call back", () => (this.call ? actions.endCall() : actions.call()), { "data-action": "call" })),
        actionButton("Hang up", actions.hangUp, { class: "danger", "data-action": "hangup" }),
      ),
    );
    this.render();
    this.start(`/whep/${encodeURIComponent(room)}/${encodeURIComponent(identity)}`, token);
  }

  async start(path, token) {
    try {
      this.session = await play(new URL(path, location.origin).href, token, this.video, {
        signal: this.abort.signal,
        onState: (state) => this.setStatus(state === "connected" ? "playing" : state),
      });
    } catch (e) {
      if (!this.abort.signal.aborted) this.setStatus(`cannot play: ${errorText(e)}`);
      return;
    }
    const stats = new InboundStats(this.session.pc);
    this.timer = setInterval(async () => {
      if (!this.session?.pc) return;
      const s = await stats.sample();
      const size = s.width ? ` · ${s.width}×${s.height}` : "";
      const fps = s.fps ? ` · ${Math.round(s.fps)} fps` : "";
      this.stats.textContent = `${formatBitrate(s.bitrate)}${size}${fps}`;
    }, 1000);
  }

  setStatus(text) {
    this.status.textContent = text;
    this.status.dataset.state = text;
  }

  alarm(kind, raised) {
    if (raised) this.alarms.add(kind);
    else this.alarms.delete(kind);
    this.render();
  }

  mute(kind, muted) {
    this.muted.set(kind, muted);
    this.render();
  }

  /** The call's state as the server reports it: null, "ringing" or "connected". */
  setCall(state) {
    this.call = state;
    this.render();
  }

  viewerChange(delta) {
    this.viewers = Math.max(0, this.viewers + delta);
    this.render();
  }

  render() {
    replace(
      this.badges,
      [...this.alarms].map((kind) => h("span", { class: "badge alarm", "data-alarm": ALARM_NAMES[kind] }, ALARM_NAMES[kind] ?? "alarm")),
      this.muted.get(TrackKind.VIDEO) ? h("span", { class: "badge" }, "video muted") : null,
      this.muted.get(TrackKind.AUDIO) ? h("span", { class: "badge" }, "audio muted") : null,
      this.call === "ringing" ? h("span", { class: "badge call", "data-testid": "ringing" }, "ringing…") : null,
      this.call === "connected" ? h("span", { class: "badge call", "data-testid": "in-call" }, "in call") : null,
    );
    this.el.classList.toggle("alarmed", this.alarms.size > 0);
    this.viewerBadge.textContent = `${this.viewers} watching`;
    this.muteVideo.textContent = this.muted.get(TrackKind.VIDEO) ? "Unmute video" : "Mute video";
    this.muteAudio.textContent = this.muted.get(TrackKind.AUDIO) ? "Unmute audio" : "Mute audio";
    this.callButton.textContent = this.call ? "End call" : "Call back";
    this.callButton.dataset.action = this.call ? "end-call" : "call";
  }

  close() {
    this.abort.abort();
    clearInterval(this.timer);
    this.session?.close();
    this.el.remove();
  }
}
