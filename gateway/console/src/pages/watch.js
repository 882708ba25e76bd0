// A standalone WHEP player for one stream, fit for an <iframe>:
// /watch/{room}/{stream}#token=... (the token needs the subscribe grant).

import { errorText, h, replace } from "../dom.js";
import { play } from "../whip.js";

export function watchPage(app, room, stream) {
  const token = new URLSearchParams(location.hash.slice(1)).get("token") || undefined;
  const video = h("video", { autoplay: true, playsInline: true, muted: true, controls: true, "data-testid": "player" });
  const status = h("p", { class: "player-status", role: "status", "data-testid": "player-status" }, "Connecting…");
  const unmute = h("button", { type: "button", class: "unmute" }, "Unmute");
  unmute.addEventListener("click", () => {
    video.muted = false;
    unmute.remove();
  });
  document.body.classList.add("player-page");
  replace(app, h("div", { class: "player" }, video, status, unmute));
  const endpoint = new URL(`/whep/${encodeURIComponent(room)}/${encodeURIComponent(stream)}`, location.origin).href;
  const show = (text) => {
    status.textContent = text;
    status.hidden = !text;
  };
  let session;
  const start = async () => {
    show(`Waiting for ${stream}…`);
    try {
      session = await play(endpoint, token, video, {
        onState: (state) => {
          if (state === "connected") show("");
          else if ((state === "failed" || state === "closed") && session) {
            show("The stream ended; waiting for it to come back…");
            session.close();
            session = null;
            setTimeout(start, 3000);
          }
        },
      });
    } catch (e) {
      show(`Cannot play ${stream}: ${errorText(e)}`);
    }
  };
  start();
  addEventListener("pagehide", () => session?.close());
}
