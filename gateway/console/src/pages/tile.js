// One stream on the wall: a WHEP player with the stream's identity, the
// server's statistics of it (bitrate, resolution, frame rate and loss from
// the camera, GetStreamStats every 2 s; a "poor link" badge when the
// camera's link loses 5 % or more), viewer count, alarm and mute badges,
// and the dispatcher's actions on it. A camera that drops stays on the wall:
// "reconnecting…" over its last picture while the server waits for it,
// "offline" after, and playing again when it comes back.
//
// An IP camera's tile (RTSP, pulled by Vigil) is there while the camera is
// configured, live or not: over the picture it says the camera's state
// (connecting, unreachable, unauthorised, unsupported codec, idle on
// demand) with the server's detail, and plays when it is live. It has no
// "Call back" or "Hang up" (a camera takes no call, and the rooms page
// removes it); "Mute" stops forwarding it as for anyone.

import { CameraState, TrackKind } from "../api.js";
import { stateLabel, stateName, troubled } from "../cameras.js";
import { actionButton, formatBitrate, formatTime, h, replace } from "../dom.js";
import { ALARM_NAMES, percent, streamSummary } from "../describe.js";
import { Viewing } from "../viewing.js";
import { Player } from "../whip.js";

/** How often the tile asks the server for the stream's statistics. */
const STATS_EVERY_MS = 2000;

export class Tile {
  /**
   * `actions`: { mute(kind, muted), hangUp(), call(), endCall(), remove() } on this stream.
   * `participant`: its ListParticipants entry, if known.
   * `camera`: its ListCameras entry, if it is an IP camera (see `setCamera`).
   */
  constructor({ api, room, identity, token, participant, camera, actions }) {
    this.api = api;
    this.room = room;
    this.identity = identity;
    // The server's verdict on the camera's link (StreamStats.poor_link).
    this.poorLink = false;
    this.alarms = new Set(participant?.activeAlarms ?? []);
    this.muted = new Map((participant?.tracks ?? []).map((t) => [t.kind, t.muted]));
    this.viewers = participant?.viewerCount ?? 0;
    // The server's state of the dispatcher's call to this participant:
    // null, "ringing" or "connected" (CallRequested / CallConnected /
    // CallEnded events).
    this.call = null;
    // An IP camera's last known settings and state (null: a person's
    // stream); `isCamera` may be known from the participant before.
    this.camera = null;
    this.isCamera = false;
    this.viewing = new Viewing({ seesPublisher: true, onChange: () => this.render() });

    this.video = h("video", { autoplay: true, playsInline: true, muted: true });
    this.status = h("span", { class: "status", "data-testid": "tile-status" }, "connecting");
    // Over the picture, so a frozen frame cannot pass for a still scene.
    this.notice = h("div", { class: "notice", "data-testid": "tile-notice", hidden: true });
    this.stats = h("span", { class: "stats", "data-testid": "tile-stats" });
    this.viewerBadge = h("span", { class: "viewers", title: "viewers" });
    this.badges = h("span", { class: "badges" });
    this.cameraBadge = h("span", { class: "badge camera", "data-testid": "camera-state", hidden: true });
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
      h("div", { class: "media" }, this.video, this.notice, h("div", { class: "overlay" }, h("strong", {}, identity), this.cameraBadge, this.badges)),
      h("div", { class: "info" }, this.status, this.stats, this.viewerBadge),
      h(
        "div",
        { class: "actions" },
        listen,
        h("button", { type: "button", class: "secondary", "data-action": "fullscreen", onclick: () => this.el.requestFullscreen?.() }, "Fullscreen"),
        this.muteVideo,
        this.muteAudio,
        (this.callButton = actionButton("Call back", () => (this.call ? actions.endCall() : actions.call()), { "data-action": "call" })),
        (this.hangUpButton = actionButton("Hang up", actions.hangUp, { class: "danger", "data-action": "hangup" })),
        // An offline camera stays until it comes back or the dispatcher removes it.
        (this.removeButton = h("button", { type: "button", class: "secondary", hidden: true, "data-action": "remove", onclick: actions.remove }, "Remove")),
      ),
    );
    if (participant?.camera || camera) this.setCamera(camera ?? null);
    this.render();
    const endpoint = new URL(`/whep/${encodeURIComponent(room)}/${encodeURIComponent(identity)}`, location.origin).href;
    this.player = new Player(endpoint, token, this.video, { onState: (state, error) => this.viewing.playerState(state, error) });
    this.timer = setInterval(() => this.sample(), STATS_EVERY_MS);
    this.sample();
  }

  /** The server's statistics of the stream, shown on the tile. */
  async sample() {
    let stats = null;
    try {
      stats = await this.api.rooms.getStreamStats({ room: this.room, stream: this.identity });
    } catch {
      // Not published (yet, or any more), or the server is away: the
      // tile's status says which; no stale figures meanwhile.
    }
    if (this.closed) return;
    this.showStats(stats);
  }

  /**
   * What the camera sends as the server receives it: bitrate of all its
   * tracks, the video's picture size and frame rate, and the worst
   * track's loss over the last 2 s; details (jitter, repairs, each
   * viewer's loss and round trip) in the tooltip.
   */
  showStats(s) {
    const summary = streamSummary(s);
    if (!summary) {
      this.stats.textContent = "";
      this.stats.title = "";
      for (const key of ["bitrate", "width", "height", "loss"]) delete this.stats.dataset[key];
    } else {
      const { text, bitrate, width, height, loss } = summary;
      this.stats.textContent = text;
      Object.assign(this.stats.dataset, { bitrate, width, height, loss: loss.toFixed(4) });
      const lines = s.tracks.map(
        (t) =>
          `${t.kind === TrackKind.VIDEO ? "video" : "audio"} ${t.codec}: ${formatBitrate(Number(t.bitrateBps))}, ${percent(t.loss)} lost, ` +
          `${t.packetsLate} repaired, jitter ${t.jitterMs.toFixed(1)} ms, ${t.nackCount} NACK, ${t.pliCount} PLI from viewers`,
      );
      for (const v of s.viewers) {
        const kinds = v.tracks.map((t) => `${t.kind === TrackKind.VIDEO ? "video" : "audio"} ${percent(t.fractionLost)} lost`);
        const rtt = v.tracks.find((t) => t.rttMs !== undefined)?.rttMs;
        lines.push(`viewer ${v.identity}: ${kinds.join(", ")}${rtt === undefined ? "" : `, round trip ${Math.round(rtt)} ms`}`);
      }
      this.stats.title = lines.join("\n");
    }
    const poor = Boolean(s?.poorLink);
    if (poor !== this.poorLink) {
      this.poorLink = poor;
      this.render();
    }
  }

  /** The publisher's session ended without a successor (it may come back). */
  publisherLeft() {
    this.viewing.publisherLeft();
  }

  /** The publisher is there (joined, published a track, or listed): play it now. */
  publisherBack() {
    this.viewing.publisherBack();
    this.player.wake();
  }

  /**
   * The server closed this wall's player of the stream; `publisherGone`:
   * because the publisher did not come back within the republish grace.
   */
  playerClosed(publisherGone) {
    if (publisherGone) this.viewing.publisherGone();
    this.player.lost();
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

  /**
   * It is an IP camera: `camera` (if known) is its ListCameras entry, kept
   * current from CameraStateChanged. Its call and hang-up buttons go.
   */
  setCamera(camera) {
    if (!this.isCamera) {
      this.isCamera = true;
      this.el.dataset.camera = "";
      this.callButton.remove();
      this.hangUpButton.remove();
    }
    if (camera) this.camera = camera;
    this.render();
  }

  viewerChange(delta) {
    this.viewers = Math.max(0, this.viewers + delta);
    this.render();
  }

  render() {
    let { state, text } = this.viewing.status;
    // No picture is what a muted video is: its badge says so.
    if (state === "frozen" && this.muted.get(TrackKind.VIDEO)) [state, text] = ["playing", "playing"];
    this.status.textContent = text;
    this.status.dataset.state = state;
    this.el.dataset.state = state;
    const notices = {
      reconnecting: () => `lost at ${formatTime(this.viewing.since)}: the picture is frozen`,
      offline: () => `no picture since ${formatTime(this.viewing.since)}`,
      frozen: () => `no new frame since ${formatTime(this.viewing.frozenAt)}`,
    };
    this.notice.hidden = !notices[state];
    if (notices[state]) replace(this.notice, h("strong", {}, text), h("span", {}, notices[state]()));
    // A camera that is not live says why, whatever its player says.
    if (this.camera) this.renderCamera();
    // An offline camera stays until the rooms page removes it.
    this.removeButton.hidden = state !== "offline" || this.isCamera;
    replace(
      this.badges,
      [...this.alarms].map((kind) => h("span", { class: "badge alarm", "data-alarm": ALARM_NAMES[kind] }, ALARM_NAMES[kind] ?? "alarm")),
      this.muted.get(TrackKind.VIDEO) ? h("span", { class: "badge" }, "video muted") : null,
      this.muted.get(TrackKind.AUDIO) ? h("span", { class: "badge" }, "audio muted") : null,
      this.call === "ringing" ? h("span", { class: "badge call", "data-testid": "ringing" }, "ringing…") : null,
      this.call === "connected" ? h("span", { class: "badge call", "data-testid": "in-call" }, "in call") : null,
      this.poorLink ? h("span", { class: "badge poor", "data-testid": "poor-link", title: "the camera's link lost 5 % or more of its packets over the last 2 s" }, "poor link") : null,
    );
    this.el.dataset.link = this.poorLink ? "poor" : "ok";
    this.el.classList.toggle("alarmed", this.alarms.size > 0);
    this.viewerBadge.textContent = `${this.viewers} watching`;
    this.muteVideo.textContent = this.muted.get(TrackKind.VIDEO) ? "Unmute video" : "Mute video";
    this.muteAudio.textContent = this.muted.get(TrackKind.AUDIO) ? "Unmute audio" : "Mute audio";
    this.callButton.textContent = this.call ? "End call" : "Call back";
    this.callButton.dataset.action = this.call ? "end-call" : "call";
  }

  renderCamera() {
    const { state, stateDetail: detail } = this.camera;
    const name = stateName(state);
    this.el.dataset.cameraState = name;
    this.cameraBadge.hidden = false;
    this.cameraBadge.textContent = `camera ${stateLabel(state)}`;
    this.cameraBadge.title = detail;
    this.cameraBadge.classList.toggle("troubled", troubled(state));
    if (state === CameraState.LIVE) return;
    const since = Number(this.camera.stateSinceUnixMs);
    this.status.textContent = `camera ${stateLabel(state)}`;
    this.notice.hidden = false;
    replace(
      this.notice,
      h("strong", { "data-testid": "camera-state-label" }, stateLabel(state)),
      h("span", { "data-testid": "camera-detail" }, [detail, since ? `since ${formatTime(since)}` : null].filter(Boolean).join(" · ")),
    );
  }

  close() {
    this.closed = true;
    clearInterval(this.timer);
    this.player.close();
    this.viewing.close();
    this.el.remove();
  }
}
