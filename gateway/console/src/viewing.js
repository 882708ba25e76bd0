// What a player of a stream tells the person watching it. A frozen picture
// must never pass for a still scene: while the publisher is away (the
// server holds its viewers for the republish grace) the player says
// "reconnecting…", and "offline" once the stream is gone; it says "playing"
// again when the publisher is back. The server's events about the publisher
// decide when the page sees them (the wall, or a token of the publisher's
// own identity); otherwise the player's own state does (a picture frozen
// for 3 s, a session closed, WHEP answering 409).

import { errorText } from "./dom.js";

/**
 * How long a publisher that left stays "reconnecting…" when no event says
 * more (this page holds no session the server would close when the
 * republish grace ends): the server's default grace.
 */
const OFFLINE_AFTER_MS = 30000;

export class Viewing {
  /**
   * `seesPublisher`: the page gets the publisher's own events (joined,
   * left), so a frozen picture is left to them and to the alarms.
   * `onChange()` is called whenever `status` may have changed.
   */
  constructor({ seesPublisher, onChange }) {
    this.seesPublisher = seesPublisher;
    this.onChange = onChange;
    // As the events say: "live", "gone" (left; may come back), "offline".
    this.publisher = "live";
    // When the publisher went away or came back.
    this.since = Date.now();
    this.player = "connecting";
    this.error = null;
    this.played = false;
    this.frozenAt = 0;
    this.timer = null;
  }

  /** The publisher's session ended (not replaced, not hung up). */
  publisherLeft() {
    if (this.publisher !== "live") return;
    this.set("gone");
    this.timer = setTimeout(() => this.changed(), OFFLINE_AFTER_MS);
  }

  /** The publisher is back: it joined or published, or a re-read lists it. */
  publisherBack() {
    if (this.publisher !== "live") this.set("live");
  }

  /** The server closed this page's session because the publisher did not come back. */
  publisherGone() {
    if (this.publisher !== "offline") this.set("offline");
  }

  /** The player's state (see `Player`). */
  playerState(state, error) {
    const before = this.player;
    this.player = state;
    this.error = error;
    if (state === "frozen" && before !== "frozen") this.frozenAt = Date.now();
    if (state === "playing") {
      this.played = true;
      // A new session was answered, or frames came again after a freeze:
      // either way the server has a publisher.
      if ((before === "connecting" || before === "frozen") && this.publisher !== "live") this.set("live");
    }
    if (state === "waiting" && this.played && !this.seesPublisher && this.publisher === "live") {
      // Nobody publishes what played before: gone, as far as this page can tell.
      this.set("gone");
      this.timer = setTimeout(() => this.changed(), OFFLINE_AFTER_MS);
    }
    this.changed();
  }

  set(publisher) {
    clearTimeout(this.timer);
    // `since`: when it went away (gone, then offline), or came back. A
    // picture that froze before the leave was known went away then.
    if ((publisher === "live") !== (this.publisher === "live")) {
      this.since = publisher !== "live" && this.player === "frozen" ? this.frozenAt : Date.now();
    }
    this.publisher = publisher;
    this.changed();
  }

  changed() {
    this.onChange();
  }

  /**
   * { state, text }: state is "connecting", "waiting" (never played, not
   * live yet), "playing", "frozen" (no new frame for 3 s, the publisher
   * still there), "reconnecting", "offline" or "error".
   */
  get status() {
    const connected = this.player === "playing" || this.player === "frozen";
    if (this.player === "failed") return { state: "error", text: `cannot play: ${errorText(this.error)}` };
    if (this.publisher === "gone" && !connected && Date.now() - this.since >= OFFLINE_AFTER_MS) {
      this.publisher = "offline";
    }
    if (this.publisher === "offline") return { state: "offline", text: "offline" };
    if (this.publisher === "gone") return { state: "reconnecting", text: "reconnecting…" };
    switch (this.player) {
      case "playing":
        return { state: "playing", text: "playing" };
      case "frozen":
        // The publisher is there, as far as its events say, but sends no
        // picture (camera stopped, or its connection is dying: its leave
        // comes when ICE gives up). Without its events, this is all a page
        // can know of a drop.
        return this.seesPublisher ? { state: "frozen", text: "no picture" } : { state: "reconnecting", text: "reconnecting…" };
      case "retrying":
        return { state: "reconnecting", text: "reconnecting…" };
      case "waiting":
        return this.played ? { state: "reconnecting", text: "reconnecting…" } : { state: "waiting", text: "waiting for the stream…" };
      default:
        return { state: "connecting", text: "connecting" };
    }
  }

  close() {
    clearTimeout(this.timer);
  }
}
