// A standalone WHEP player for one stream, fit for an <iframe>:
// /watch/{room}/{stream}#token=... (the token needs the subscribe grant).
//
// It says "reconnecting…" over a picture that stopped and "offline" once the
// stream is gone, and plays again by itself. Its event feed tells it about
// the publisher when its credential may see that (no credential on an open
// server, a room admin token, or the publisher's own token); with another
// viewer's token it sees only its own sessions' events, so a frozen picture
// and WHEP's 409 are what it goes by.

import { LeaveReason, SessionRole, connect, followEvents } from "../api.js";
import { claimsOf } from "../auth.js";
import { h, replace } from "../dom.js";
import { Viewing } from "../viewing.js";
import { Player } from "../whip.js";

export function watchPage(app, room, stream) {
  const token = new URLSearchParams(location.hash.slice(1)).get("token") || undefined;
  let claims = null;
  try {
    claims = token ? claimsOf(token) : null;
  } catch {
    // The server refuses it, and the player says so.
  }
  const video = h("video", { autoplay: true, playsInline: true, muted: true, controls: true, "data-testid": "player" });
  const status = h("p", { class: "player-status", role: "status", "data-testid": "player-status" }, "Connecting…");
  const unmute = h("button", { type: "button", class: "unmute" }, "Unmute");
  unmute.addEventListener("click", () => {
    video.muted = false;
    unmute.remove();
  });
  document.body.classList.add("player-page");
  const player = h("div", { class: "player" }, video, status, unmute);
  replace(app, player);

  const seesPublisher = !claims || claims.grants?.admin || claims.sub === stream;
  const viewing = new Viewing({
    seesPublisher,
    onChange: () => {
      const { state, text } = viewing.status;
      const shown = {
        playing: "",
        connecting: "Connecting…",
        waiting: `Waiting for ${stream}…`,
        reconnecting: `${stream}: reconnecting…`,
        offline: `${stream} is offline`,
      }[state] ?? `Cannot play ${stream}: ${text.replace(/^cannot play: /, "")}`;
      status.textContent = shown;
      status.hidden = !shown;
      status.dataset.state = state;
      player.dataset.state = state;
    },
  });
  const endpoint = new URL(`/whep/${encodeURIComponent(room)}/${encodeURIComponent(stream)}`, location.origin).href;
  const whep = new Player(endpoint, token, video, { onState: (state, error) => viewing.playerState(state, error) });

  // What the server says about the publisher and about this page's own sessions.
  const api = connect(token ? { kind: "token", secret: token } : { kind: "open" });
  const stop = followEvents(
    api,
    { room, identity: stream },
    {
      onEvent: (event) => {
        const { case: kind, value } = event.kind;
        if (kind === "roomDeleted") {
          viewing.publisherGone();
          whep.close();
          stop();
          return;
        }
        if (kind === "participantLeft" && value.role === SessionRole.VIEWER && value.stream === stream && event.identity === claims?.sub) {
          if (value.reason === LeaveReason.PUBLISHER_GONE) viewing.publisherGone();
          if (value.reason === LeaveReason.PUBLISHER_GONE || value.reason === LeaveReason.SERVER_SHUTDOWN) whep.lost();
          return;
        }
        if (event.identity !== stream) return;
        if (kind === "participantLeft" && value.role === SessionRole.PUBLISHER && value.reason !== LeaveReason.REPLACED) viewing.publisherLeft();
        if ((kind === "participantJoined" && value.role === SessionRole.PUBLISHER) || kind === "trackPublished") {
          viewing.publisherBack();
          whep.wake();
        }
      },
    },
  );
  addEventListener("pagehide", () => whep.close());
}
