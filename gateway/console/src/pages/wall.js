// The dispatcher's wall of one room: a live player per published stream
// (tiles come and go with the event feed), the dispatcher's own camera for
// calling back, the room's alarms (acknowledged here, announced by a tone
// and, if wanted, a desktop notification), and the event log.
//
// Two feeds of the room's events: one drives the tiles and alarms from now
// on (a re-read of the participants and alarms each time it connects), the
// other fills the event log, starting with the history the server retains,
// so a reload does not empty it (and no old alarm sounds again). Both
// reconnect by themselves; a banner says so meanwhile.
//
// The room's IP cameras (ListCameras, then CameraStateChanged and
// CameraRemoved) have a tile each while configured, live or not; it plays
// once the camera is live (an on-demand camera starts because the tile asks
// for it: the server holds the WHEP request until it is live).

import { CameraState, Code, ConnectError, LeaveReason, SessionRole, allPages, followEvents } from "../api.js";
import { RoomCameras } from "../cameras.js";
import { actionButton, errorText, formatTime, h, replace, sleep, toast } from "../dom.js";
import { describe } from "../describe.js";
import { publish } from "../whip.js";
import { AlarmPanel } from "./alarms.js";
import { header } from "./header.js";
import { Tile } from "./tile.js";

const MAX_EVENTS = 200;
const HANG_UP_BAN_MINUTES = 10;

export async function wallPage(app, { api, credential, room, signOut }) {
  const wall = h("section", { class: "wall", "data-testid": "wall" });
  const empty = h("p", { class: "empty muted" }, "No one is publishing in this room yet. Use “Add a camera” to join from another tab or device.");
  const events = h("ol", { class: "events", "data-testid": "events" });
  const banner = h("p", { class: "banner error", role: "alert", hidden: true, "data-testid": "wall-error" });
  const unreachable = h("p", { class: "banner offline", role: "status", hidden: true, "data-testid": "server-banner" }, "Server unreachable: reconnecting… The pictures below are not live until it is back.");
  // Other dispatchers at a wall of this room: a presence list, not cameras.
  const dispatchers = new Set();
  const presence = h("p", { class: "presence muted", "data-testid": "dispatchers" });
  const renderPresence = () => {
    presence.textContent = dispatchers.size ? `Also at a wall: ${[...dispatchers].sort().join(", ")}` : "";
  };
  // Identities a hang-up keeps out (the server's list), with a way back in.
  const bans = new BanList({ api, room });
  const tiles = new Map();
  const mine = new MyCamera(room);
  const alarms = new AlarmPanel({ api, room });

  const fail = (text) => {
    banner.textContent = text;
    banner.hidden = false;
  };

  replace(
    app,
    header({
      title: room,
      credential,
      signOut,
      extra: [
        h("a", { href: "/console/", class: "button secondary" }, "Rooms"),
        actionButton("Add a camera", () => addCamera(api, credential, room), { class: "secondary", "data-testid": "add-camera" }),
        mine.el,
      ],
    }),
    banner,
    unreachable,
    presence,
    bans.el,
    h("main", { class: "dispatch" }, h("div", {}, empty, wall), h("aside", { class: "card" }, alarms.el, h("h2", {}, "Events"), events)),
  );

  // Who the dispatcher is on the media plane, and the token it plays with.
  try {
    await mine.identify(api, credential);
  } catch (e) {
    return fail(`Cannot get a media token for this room: ${errorText(e)}`);
  }

  const actionsFor = (identity) => ({
    mute: async (kind, muted) => {
      await api.rooms.muteTrack({ room, identity, kind, muted });
    },
    hangUp: async () => {
      if (!confirm(`Hang up on ${identity}? All of their sessions are closed, and they are kept out of this room for ${HANG_UP_BAN_MINUTES} minutes.`)) return;
      // A kick that sticks: their page's reload is refused until the ban ends.
      const { sessionsClosed } = await api.rooms.hangUp({ room, identity, banSeconds: HANG_UP_BAN_MINUTES * 60 });
      toast(`Hung up on ${identity} (${sessionsClosed} sessions)`);
    },
    call: async () => {
      await mine.start();
      // The control plane learns of the new WHIP session a moment after
      // its 201: until then it answers "not publishing".
      for (let attempt = 0; ; attempt++) {
        try {
          await api.rooms.call({ room, caller: mine.identity, callee: identity });
          break;
        } catch (e) {
          const error = ConnectError.from(e);
          const early = error.code === Code.FailedPrecondition && error.rawMessage.includes("is not publishing");
          if (!early || attempt >= 10) {
            // Nobody else to call: the camera goes off again.
            if (!calls.size) mine.stop();
            throw e;
          }
          await sleep(300);
        }
      }
      toast(`Ringing ${identity}…`);
    },
    endCall: async () => {
      await api.rooms.endCall({ room, callee: identity });
    },
    remove: () => removeTile(identity),
  });
  // This dispatcher's calls as the server reports them: callee -> state.
  const calls = new Map();
  const setCall = (callee, state) => {
    if (state) calls.set(callee, state);
    else calls.delete(callee);
    tiles.get(callee)?.setCall(state);
  };

  const addTile = (identity, participant, camera) => {
    if (identity === mine.identity || dispatchers.has(identity) || tiles.has(identity)) return tiles.get(identity);
    const tile = new Tile({ api, room, identity, token: mine.token, participant, camera, actions: actionsFor(identity) });
    tile.setCall(calls.get(identity) ?? null);
    for (const kind of alarms.activeKinds(identity)) tile.alarm(kind, true);
    tiles.set(identity, tile);
    wall.append(tile.el);
    empty.hidden = true;
    return tile;
  };
  const removeTile = (identity) => {
    if (!tiles.has(identity)) return;
    tiles.get(identity).close();
    tiles.delete(identity);
    empty.hidden = tiles.size > 0;
  };

  // Alarms raised before the tiles' feed started, on their tiles (a
  // person's also come with its participant entry).
  const alarmsOnTiles = () => {
    for (const [identity, tile] of tiles) for (const kind of alarms.activeKinds(identity)) tile.alarm(kind, true);
  };

  // The room's IP cameras: a tile each, whatever their state.
  const cameraChanged = (identity, camera) => {
    if (!camera) return removeTile(identity);
    const tile = addTile(identity, null, camera);
    tile?.setCamera(camera);
    // Live now: its tile need not wait for its retry to play it.
    if (camera.state === CameraState.LIVE) tile?.publisherBack();
  };
  const cameras = new RoomCameras({
    api,
    room,
    onChange: cameraChanged,
    onList: (list) => {
      for (const camera of list) cameraChanged(camera.identity, camera);
      // Removed while this page was not listening.
      if (cameras.available) for (const [identity, tile] of tiles) if (tile.isCamera && !cameras.has(identity)) removeTile(identity);
    },
  });

  // When an event last said something about a publisher (performance.now()).
  const heard = new Map();
  // Publishers the server lists are live; a tile whose publisher it does not
  // list any more went away while this page was not listening. An event
  // that came while the list was on its way is newer than the list.
  const resync = async () => {
    const asked = performance.now();
    // A wall without them (a server that does not pull cameras, a
    // transient error) still shows its publishers.
    cameras.load().catch((e) => console.warn(`cannot list cameras: ${errorText(e)}`));
    try {
      const participants = await allPages((r) => api.rooms.listParticipants(r), { room }, "participants");
      dispatchers.clear();
      for (const p of participants) if (p.dispatcher && p.identity !== mine.identity) dispatchers.add(p.identity);
      renderPresence();
      for (const identity of dispatchers) removeTile(identity);
      const stale = (identity) => (heard.get(identity) ?? 0) > asked;
      const publishing = new Map(participants.filter((p) => p.publishing && !p.dispatcher && !stale(p.identity)).map((p) => [p.identity, p]));
      for (const [identity, tile] of tiles) if (!publishing.has(identity) && !stale(identity)) tile.publisherLeft();
      for (const [identity, p] of publishing) {
        const tile = addTile(identity, p, cameras.get(identity));
        if (p.camera) tile?.setCamera(cameras.get(identity) ?? null);
        tile?.publisherBack();
        for (const track of p.tracks) tile?.mute(track.kind, track.muted);
      }
    } catch (e) {
      fail(ConnectError.from(e).code === Code.NotFound ? `Room ${room} does not exist.` : errorText(e));
    }
  };

  const log = (event) => {
    // A gap before anything was shown only says older events are not kept.
    if (event.kind.case === "historyGap" && !events.children.length) return;
    const text = describe(event);
    if (!text) return;
    // A gap is the server's note, not an event: it has no time of its own.
    const at = Number(event.atUnixMs) || Date.now();
    const item = h("li", { class: text.alarm ? "alarm" : "" }, h("time", {}, formatTime(at)), " ", text.text);
    if (event.kind.case === "cameraStateChanged") {
      // A camera that cannot be reached is tried again and again, each try
      // an event (connecting, unreachable…), and a new detail is one too:
      // one line says it, so the panel's other events are not pushed out.
      const last = cameraLines.get(event.identity);
      const state = event.kind.value.state;
      if (last && (last.state === state || (retrying(last.state) && retrying(state)))) last.item.remove();
      cameraLines.set(event.identity, { item, state });
    }
    events.prepend(item);
    while (events.children.length > MAX_EVENTS) events.lastChild.remove();
  };
  // Each camera's last state line in the panel.
  const cameraLines = new Map();
  const retrying = (state) => state === CameraState.CONNECTING || state === CameraState.UNREACHABLE;

  const publisherLeft = (identity, reason) => {
    switch (reason) {
      case LeaveReason.REPLACED:
        // Its new session carries on at once: nothing to show.
        return;
      case LeaveReason.HUNG_UP:
      case LeaveReason.CALL_ENDED:
      case LeaveReason.ROOM_CLOSED:
        // Ended on purpose by a dispatcher (or the room went): no camera to
        // wait for; but an IP camera's tile stays while it is configured.
        if (tiles.get(identity)?.isCamera && reason !== LeaveReason.ROOM_CLOSED) return tiles.get(identity).publisherLeft();
        return removeTile(identity);
      default:
        // Timed out, left, server restart: the server holds the viewers for
        // the republish grace, and so does the wall (offline after).
        tiles.get(identity)?.publisherLeft();
    }
  };

  const apply = (event) => {
    const { case: kind, value } = event.kind;
    const who = event.identity;
    if (kind === "trackPublished" || (value?.role === SessionRole.PUBLISHER && (kind === "participantJoined" || kind === "participantLeft"))) {
      heard.set(who, performance.now());
    }
    switch (kind) {
      case "trackPublished":
        addTile(who, null, cameras.get(who))?.publisherBack();
        // A new session's tracks start unmuted.
        tiles.get(who)?.mute(value.kind, false);
        break;
      case "participantJoined":
        if (value.dispatcher) {
          if (who !== mine.identity) dispatchers.add(who);
          removeTile(who);
          renderPresence();
        } else if (value.role === SessionRole.PUBLISHER) addTile(who, null, cameras.get(who))?.publisherBack();
        if (value.role === SessionRole.VIEWER) tiles.get(value.stream)?.viewerChange(+1);
        break;
      case "callRequested":
        if (value.caller === mine.identity) setCall(value.callee, "ringing");
        break;
      case "callConnected":
        if (value.caller === mine.identity) setCall(value.callee, "connected");
        break;
      case "callEnded":
        if (value.caller === mine.identity) {
          setCall(value.callee, null);
          // Privacy: the camera and microphone go off with the last call.
          if (!calls.size) mine.stop();
        }
        break;
      case "participantLeft":
        // A dispatcher may still have other sessions: ask.
        if (dispatchers.has(who)) resync();
        if (value.role === SessionRole.PUBLISHER) {
          if (who === mine.identity) mine.stop();
          else publisherLeft(who, value.reason);
        } else {
          tiles.get(value.stream)?.viewerChange(-1);
          // This wall's own player of the stream, closed because its
          // publisher did not come back, or for a restart: play again when
          // it can. (Other closes are seen by the player's connection; an
          // event names no session, so a late one could hit its successor.)
          const gone = value.reason === LeaveReason.PUBLISHER_GONE;
          if (who === mine.identity && (gone || value.reason === LeaveReason.SERVER_SHUTDOWN)) tiles.get(value.stream)?.playerClosed(gone);
        }
        break;
      case "trackMuted":
        tiles.get(who)?.mute(value.kind, value.muted);
        break;
      case "alarmRaised":
      case "alarmCleared":
        tiles.get(value.stream)?.alarm(value.kind, kind === "alarmRaised");
        break;
      case "cameraStateChanged":
      case "cameraRemoved":
        cameras.onEvent(event);
        break;
      case "bansChanged":
        bans.set(value.bans);
        break;
      case "historyGap":
        resync();
        alarms.load().then(alarmsOnTiles);
        bans.load();
        break;
      case "roomDeleted":
        fail(`Room ${room} was deleted.`);
        for (const identity of [...tiles.keys()]) removeTile(identity);
        mine.stop();
        bans.set([]);
        stopState();
        stopLog();
        break;
    }
  };

  const stopState = followEvents(
    api,
    { room },
    {
      onEvent: (event) => {
        alarms.onEvent(event);
        apply(event);
      },
      onState: (state) => {
        if (state === "reconnecting") unreachable.hidden = false;
        if (state === "live" || state === "failed") unreachable.hidden = true;
        // Subscribed first, then read: nothing falls between the two.
        if (state === "live") {
          resync();
          alarms.load().then(alarmsOnTiles);
          bans.load();
        }
      },
      onError: (e) => fail(`Live updates stopped: ${errorText(e)}`),
    },
  );
  // The panel: what the server still retains of the room (a reload keeps
  // its history), then live.
  const stopLog = followEvents(api, { room }, { onEvent: log, afterId: 0n });
  addEventListener("pagehide", () => {
    for (const tile of tiles.values()) tile.close();
    mine.stop();
  });
}

/**
 * Who is kept out of the room by a hang-up, and until when, each with
 * "Let back in" (LiftBan). Set from GetRoom and from BansChanged; bans end
 * by themselves without an event, so the list drops them when they do.
 */
class BanList {
  constructor({ api, room }) {
    this.api = api;
    this.room = room;
    this.bans = new Map();
    this.el = h("p", { class: "presence muted", "data-testid": "bans", hidden: true });
    this.timer = null;
  }

  async load() {
    try {
      this.set((await this.api.rooms.getRoom({ name: this.room })).bans);
    } catch {
      // The room's state says why elsewhere (banner); the list waits.
    }
  }

  set(bans) {
    this.bans = new Map(bans.map((b) => [b.identity, Number(b.untilUnixMs)]));
    this.render();
  }

  render() {
    clearTimeout(this.timer);
    const now = Date.now();
    for (const [identity, until] of this.bans) if (until <= now) this.bans.delete(identity);
    const items = [...this.bans].sort(([a], [b]) => a.localeCompare(b)).map(([identity, until]) =>
      h(
        "span",
        { class: "ban", "data-identity": identity },
        `${identity} (${Math.ceil((until - now) / 60000)} min) `,
        actionButton("Let back in", async () => {
          await this.api.rooms.liftBan({ room: this.room, identity });
          toast(`${identity} may join again`);
        }, { class: "secondary small", "data-testid": "lift-ban" }),
      ),
    );
    replace(this.el, ...(items.length ? ["Kept out: ", ...items] : []));
    this.el.hidden = !items.length;
    // Minutes left, and bans that end by themselves.
    if (items.length) this.timer = setTimeout(() => this.render(), 15000);
  }
}

/** Opens a join page for a new field user in another tab. */
async function addCamera(api, credential, room) {
  const identity = prompt("Name of the new camera (its stream name):", `cam-${Math.floor(Math.random() * 900 + 100)}`);
  if (!identity) return;
  if (credential.kind === "open") {
    window.open(`/join/${encodeURIComponent(room)}?name=${encodeURIComponent(identity)}`, "_blank", "noopener");
    return;
  }
  const { token } = await api.tokens.createToken({ room, identity, grants: { publish: true, subscribe: true } });
  window.open(`/join/${encodeURIComponent(room)}#token=${token}`, "_blank", "noopener");
}

/** The dispatcher's own camera and microphone, published for call-backs. */
class MyCamera {
  constructor(room) {
    this.room = room;
    this.preview = h("video", { autoplay: true, playsInline: true, muted: true, class: "mine" });
    this.state = h("span", { class: "muted", "data-testid": "my-camera-state" }, "camera off");
    this.button = actionButton("Start my camera", () => (this.session ? this.stop() : this.start()), { class: "secondary", "data-testid": "my-camera" });
    this.el = h("div", { class: "my-camera" }, this.preview, this.state, this.button);
    this.session = null;
  }

  async identify(api, credential) {
    if (credential.kind === "token") {
      this.identity = credential.claims.sub;
      this.token = credential.secret;
      return;
    }
    this.identity = sessionStorage.getItem("vigil.dispatcher") || `dispatcher-${Math.random().toString(16).slice(2, 6)}`;
    sessionStorage.setItem("vigil.dispatcher", this.identity);
    if (credential.kind === "admin") {
      const issued = await api.tokens.createToken({ room: this.room, identity: this.identity, grants: { admin: true }, ttlSeconds: 12 * 3600 });
      this.token = issued.token;
    }
  }

  async start() {
    if (this.session) return;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    } catch (e) {
      throw new Error(`Your camera or microphone is not available (${e.name}): allow access to call back.`);
    }
    this.preview.srcObject = stream;
    this.stream = stream;
    this.state.textContent = "connecting";
    try {
      this.session = await publish(new URL(`/whip/${encodeURIComponent(this.room)}/${encodeURIComponent(this.identity)}`, location.origin).href, this.token, stream, {
        onState: (state) => {
          this.state.textContent = state === "connected" ? `live as ${this.identity}` : state;
        },
      });
    } catch (e) {
      this.stop();
      throw e;
    }
    this.button.textContent = "Stop my camera";
  }

  stop() {
    this.session?.close();
    this.session = null;
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = null;
    this.preview.srcObject = null;
    this.state.textContent = "camera off";
    this.button.textContent = "Start my camera";
  }
}
