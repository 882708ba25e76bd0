// IP cameras (RTSP) in words, and a room's cameras as the pages keep them:
// ListCameras, then CameraStateChanged and CameraRemoved from the feed.

import { CameraState, CameraTransport, Code, ConnectError } from "./api.js";
import { h } from "./dom.js";

/** Each state's `data-camera-state` name and what a person reads. */
const STATES = {
  [CameraState.IDLE]: ["idle", "idle (on demand)"],
  [CameraState.CONNECTING]: ["connecting", "connecting…"],
  [CameraState.LIVE]: ["live", "live"],
  [CameraState.UNREACHABLE]: ["unreachable", "unreachable"],
  [CameraState.UNAUTHORISED]: ["unauthorised", "unauthorised"],
  [CameraState.UNSUPPORTED_CODEC]: ["unsupported-codec", "unsupported codec"],
};

/** "unreachable", for `data-camera-state` (and tests). */
export const stateName = (state) => STATES[state]?.[0] ?? "unknown";

/** "unsupported codec", for people. */
export const stateLabel = (state) => STATES[state]?.[1] ?? "unknown";

/** A state that wants a person's attention: not live and not idle on purpose. */
export const troubled = (state) => [CameraState.UNREACHABLE, CameraState.UNAUTHORISED, CameraState.UNSUPPORTED_CODEC].includes(state);

export const transportName = (transport) => (transport === CameraTransport.UDP ? "UDP" : "TCP");

/** The camera's tracks, those WebRTC cannot play marked as such. */
export const trackList = (tracks) =>
  tracks.map((t, i) => [
    i ? ", " : "",
    t.playable
      ? h("span", { class: "track" }, t.codec)
      : h("span", { class: "track unplayable", "data-playable": "false", title: "WebRTC viewers cannot play this codec: not published" }, `${t.codec} (not playable)`),
  ]);

/** The URL as the server shows it, without any user name or password (for an edit form). */
export function bareUrl(url) {
  const at = url.indexOf("@", url.indexOf("://") + 3);
  const slash = url.indexOf("/", url.indexOf("://") + 3);
  if (at < 0 || (slash >= 0 && at > slash)) return url;
  return url.slice(0, url.indexOf("://") + 3) + url.slice(at + 1);
}

/**
 * One room's cameras, kept current: `load()` reads ListCameras (again, at
 * start and whenever the feed may have missed something), `onEvent(event)`
 * applies the feed's camera events. `onChange(identity, camera | null)` hears
 * each change (null: removed); `onList(cameras)` each fresh list.
 * `available` is false on a server without cameras (UNIMPLEMENTED), which a
 * page shows as such rather than as an error.
 */
export class RoomCameras {
  constructor({ api, room, onChange = () => {}, onList = () => {} }) {
    this.api = api;
    this.room = room;
    this.onChange = onChange;
    this.onList = onList;
    this.cameras = new Map();
    this.available = true;
    // When an event last said something of a camera (performance.now()):
    // a list asked for before it is older than the event.
    this.heard = new Map();
  }

  has(identity) {
    return this.cameras.has(identity);
  }

  get(identity) {
    return this.cameras.get(identity);
  }

  /** Reads the list; throws what the server said (but not UNIMPLEMENTED). */
  async load() {
    const asked = performance.now();
    let cameras;
    try {
      ({ cameras } = await this.api.rooms.listCameras({ room: this.room }));
    } catch (e) {
      if (ConnectError.from(e).code === Code.Unimplemented) {
        this.available = false;
        this.onList([]);
        return;
      }
      throw e;
    }
    this.available = true;
    const fresh = new Map(cameras.map((c) => [c.identity, c]));
    const stale = (identity) => (this.heard.get(identity) ?? 0) > asked;
    for (const identity of [...this.cameras.keys()]) {
      if (!fresh.has(identity) && !stale(identity)) this.cameras.delete(identity);
    }
    for (const [identity, camera] of fresh) if (!stale(identity)) this.cameras.set(identity, camera);
    this.onList([...this.cameras.values()]);
  }

  /**
   * A camera as an RPC (AddCamera, UpdateCamera) sent at `asked`
   * (performance.now()) answered it: its settings, and its state unless the
   * feed told a newer one meanwhile (a camera that fails at once is
   * reported unreachable before the RPC's answer, which says connecting).
   */
  put(camera, asked = 0) {
    const known = this.cameras.get(camera.identity);
    if (known && (this.heard.get(camera.identity) ?? 0) > asked) {
      const { state, stateDetail, stateSinceUnixMs, tracks } = known;
      Object.assign(camera, { state, stateDetail, stateSinceUnixMs, tracks });
    }
    this.cameras.set(camera.identity, camera);
    this.onChange(camera.identity, camera);
  }

  /** Takes the feed's events; resolves once an unknown camera's list is read. */
  async onEvent(event) {
    const { case: kind, value } = event.kind;
    const identity = event.identity;
    if (kind === "cameraStateChanged") {
      this.heard.set(identity, performance.now());
      const camera = this.cameras.get(identity);
      // Added elsewhere (another page, grpcurl): its settings come with the list.
      if (!camera) return this.load().catch(() => {});
      Object.assign(camera, { state: value.state, stateDetail: value.detail, stateSinceUnixMs: event.atUnixMs, tracks: value.tracks });
      this.onChange(identity, camera);
    } else if (kind === "cameraRemoved") {
      this.heard.set(identity, performance.now());
      if (this.cameras.delete(identity)) this.onChange(identity, null);
    }
  }
}
