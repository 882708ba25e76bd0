// The dispatcher's wall of one room: a live player per published stream
// (tiles come and go with the event feed), the dispatcher's own camera for
// calling back, the room's alarms (acknowledged here, announced by a tone
// and, if wanted, a desktop notification), and the live event log.

import { Code, ConnectError, SessionRole, followEvents } from "../api.js";
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
  });
  // This dispatcher's calls as the server reports them: callee -> state.
  const calls = new Map();
  const setCall = (callee, state) => {
    if (state) calls.set(callee, state);
    else calls.delete(callee);
    tiles.get(callee)?.setCall(state);
  };

  const addTile = (identity, participant) => {
    if (identity === mine.identity || tiles.has(identity)) return tiles.get(identity);
    const tile = new Tile({ room, identity, token: mine.token, participant, actions: actionsFor(identity) });
    tile.setCall(calls.get(identity) ?? null);
    tiles.set(identity, tile);
    wall.append(tile.el);
    empty.hidden = true;
    return tile;
  };
  const removeTile = (identity) => {
    tiles.get(identity)?.close();
    tiles.delete(identity);
    empty.hidden = tiles.size > 0;
  };

  const resync = async () => {
    try {
      const { participants } = await api.rooms.listParticipants({ room });
      const publishing = new Map(participants.filter((p) => p.publishing).map((p) => [p.identity, p]));
      for (const identity of tiles.keys()) if (!publishing.has(identity)) removeTile(identity);
      for (const [identity, p] of publishing) addTile(identity, p);
    } catch (e) {
      fail(ConnectError.from(e).code === Code.NotFound ? `Room ${room} does not exist.` : errorText(e));
    }
  };
  await resync();
  await alarms.load();

  const log = (event) => {
    const text = describe(event);
    if (!text) return;
    events.prepend(h("li", { class: text.alarm ? "alarm" : "" }, h("time", {}, formatTime(Number(event.atUnixMs))), " ", text.text));
    while (events.children.length > MAX_EVENTS) events.lastChild.remove();
  };

  const stop = followEvents(
    api,
    { room },
    {
      onEvent: (event) => {
        log(event);
        alarms.onEvent(event);
        const { case: kind, value } = event.kind;
        const who = event.identity;
        switch (kind) {
          case "trackPublished":
            addTile(who);
            break;
          case "participantJoined":
            if (value.role === SessionRole.PUBLISHER) addTile(who);
            else tiles.get(value.stream)?.viewerChange(+1);
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
            if (value.role === SessionRole.PUBLISHER) removeTile(who);
            else tiles.get(value.stream)?.viewerChange(-1);
            if (who === mine.identity && value.role === SessionRole.PUBLISHER) mine.stop();
            break;
          case "trackMuted":
            tiles.get(who)?.mute(value.kind, value.muted);
            break;
          case "alarmRaised":
          case "alarmCleared":
            tiles.get(value.stream)?.alarm(value.kind, kind === "alarmRaised");
            break;
          case "historyGap":
            resync();
            alarms.load();
            break;
          case "roomDeleted":
            fail(`Room ${room} was deleted.`);
            for (const identity of [...tiles.keys()]) removeTile(identity);
            mine.stop();
            stop();
            break;
        }
      },
      onError: (e) => fail(`Live updates stopped: ${errorText(e)}`),
    },
  );
  addEventListener("pagehide", () => {
    for (const tile of tiles.values()) tile.close();
    mine.stop();
  });
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
