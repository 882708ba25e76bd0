// Rooms: list, create (limits, alarm thresholds), delete, and tokens with
// ready-to-paste OBS settings and browser join links, their ids, and
// revocation (one token, or every token of a room); under them, each room's
// IP cameras (added, edited and removed here). Kept current by the event
// feed.

import { Code, ConnectError, allPages, followEvents } from "../api.js";
import { streamSummary } from "../describe.js";
import { actionButton, copyField, errorText, formatTime, h, replace, toast } from "../dom.js";
import { isLoopback, publicBase } from "../links.js";
import { CameraSection } from "./cameras.js";
import { header } from "./header.js";

export function roomsPage(app, { api, credential, signOut }) {
  const list = h("tbody", { "data-testid": "rooms" });
  const tokenPanel = h("section", { class: "card", hidden: true, "data-testid": "token-panel" });
  const error = h("p", { class: "error", role: "alert" });
  // Each room's cameras: kept across refreshes of the table (a form being
  // filled in stays), in the rooms' order.
  const cameraSections = new Map();
  const cameras = h("div", { class: "camera-sections" });
  const showCameraSections = (rooms) => {
    const names = new Set(rooms.map((room) => room.name));
    for (const [name, section] of cameraSections) {
      if (!names.has(name)) {
        section.el.remove();
        cameraSections.delete(name);
      }
    }
    rooms.forEach((room, i) => {
      let section = cameraSections.get(room.name);
      if (!section) {
        section = new CameraSection({ api, room: room.name });
        cameraSections.set(room.name, section);
        section.load();
      }
      // Moved only if out of place: moving a form blurs the field being typed in.
      if (cameras.children[i] !== section.el) cameras.insertBefore(section.el, cameras.children[i] ?? null);
    });
  };
  // Each room's published streams with their figures (GetStreamStats),
  // read every few seconds for the rooms that have publishers.
  let shown = [];
  const streams = new Map();
  const streamsCell = (name) => {
    const cell = h("td", { "data-testid": "room-streams" });
    fillStreams(cell, streams.get(name) ?? []);
    return cell;
  };
  const fillStreams = (cell, entries) =>
    replace(
      cell,
      entries.map(({ stream, summary }) =>
        h("div", { class: summary?.poor ? "stream poor" : "stream", "data-stream": stream }, h("strong", {}, stream), " ", summary?.text ?? "…", summary?.poor ? h("span", { class: "badge poor" }, "poor link") : null),
      ),
    );
  const readStreams = async () => {
    for (const room of shown) {
      let entries = [];
      if (room.publishers > 0) {
        try {
          const participants = await allPages((r) => api.rooms.listParticipants(r), { room: room.name }, "participants");
          for (const p of participants.filter((p) => p.publishing && !p.dispatcher)) {
            const stats = await api.rooms.getStreamStats({ room: room.name, stream: p.identity }).catch(() => null);
            entries.push({ stream: p.identity, summary: streamSummary(stats) });
          }
        } catch {
          entries = streams.get(room.name) ?? [];
        }
      }
      streams.set(room.name, entries);
      const cell = list.querySelector(`tr[data-room="${CSS.escape(room.name)}"] [data-testid=room-streams]`);
      if (cell) fillStreams(cell, entries);
    }
  };

  const refresh = async () => {
    try {
      const rooms = await allPages((r) => api.rooms.listRooms(r), {}, "rooms");
      shown = rooms;
      error.textContent = "";
      replace(
        list,
        rooms.length === 0
          ? h("tr", {}, h("td", { colSpan: 6, class: "muted" }, "No rooms yet: create one below."))
          : rooms.map((room) => roomRow(room)),
      );
      showCameraSections(rooms);
    } catch (e) {
      error.textContent = `Cannot list rooms: ${errorText(e)}`;
    }
  };

  const roomRow = (room) =>
    h(
      "tr",
      { "data-room": room.name },
      h("td", {}, h("a", { href: `/console/rooms/${encodeURIComponent(room.name)}` }, room.name)),
      h("td", {}, `${room.publishers}`),
      h("td", {}, `${room.viewers}`),
      streamsCell(room.name),
      h("td", {}, formatTime(Number(room.createdAtUnixMs))),
      h(
        "td",
        { class: "actions" },
        h("a", { class: "button", href: `/console/rooms/${encodeURIComponent(room.name)}` }, "Open wall"),
        actionButton("Token…", async () => showTokenForm(room.name), { class: "secondary" }),
        actionButton(
          "Revoke all tokens",
          async () => {
            if (!confirm(`Revoke every token issued for ${room.name} so far? Everyone in it is hung up, and its join links and OBS tokens stop working; tokens made afterwards work.`)) return;
            const { sessionsClosed } = await api.tokens.revokeRoomTokens({ room: room.name });
            toast(`Revoked every token of ${room.name} (${sessionsClosed} sessions closed)`);
          },
          { class: "danger", "data-testid": "revoke-all" },
        ),
        actionButton(
          "Delete",
          async () => {
            if (!confirm(`Delete room ${room.name}? Everyone in it is hung up.`)) return;
            const { sessionsClosed } = await api.rooms.deleteRoom({ name: room.name });
            toast(`Deleted ${room.name} (${sessionsClosed} sessions closed)`);
          },
          { class: "danger" },
        ),
      ),
    );

  const showTokenForm = (room) => {
    const identity = h("input", { name: "identity", required: true, pattern: "[A-Za-z0-9_.\\-]{1,64}", placeholder: "e.g. cam-1", "data-testid": "token-identity" });
    const grant = (name, checked, label) => h("label", { class: "check" }, h("input", { type: "checkbox", name, checked }), label);
    const ttl = h("input", { type: "number", name: "ttl", min: 60, value: 86400 });
    const result = h("div", { "data-testid": "token-result" });
    const form = h(
      "form",
      {
        onsubmit: async (event) => {
          event.preventDefault();
          const data = new FormData(form);
          try {
            const issued = await api.tokens.createToken({
              room,
              identity: identity.value,
              grants: { publish: data.has("publish"), subscribe: data.has("subscribe"), admin: data.has("admin") },
              ttlSeconds: Number(ttl.value),
            });
            replace(result, issuedToken(room, identity.value, issued, await publicBase()));
          } catch (e) {
            replace(result, h("p", { class: "error", role: "alert" }, errorText(e)));
          }
        },
      },
      h("label", {}, "Identity (the stream name)", identity),
      h("div", { class: "row" }, grant("publish", true, "publish"), grant("subscribe", true, "watch (being called needs no grant)"), grant("admin", false, "room admin (dispatcher)")),
      h("label", {}, "Lifetime (seconds)", ttl),
      h("button", { type: "submit", "data-testid": "create-token" }, "Create token"),
    );
    replace(tokenPanel, h("h2", {}, `Token for ${room}`), form, result);
    tokenPanel.hidden = false;
    identity.focus();
  };

  const issuedToken = (room, identity, issued, base) => {
    const joinLink = `${base}/join/${encodeURIComponent(room)}#token=${issued.token}`;
    return h(
      "div",
      { class: "issued" },
      h("p", {}, `Valid until ${new Date(Number(issued.expiresAtUnix) * 1000).toLocaleString()}.`),
      copyField("Token id (to revoke it)", issued.tokenId, "token-id"),
      h(
        "p",
        {},
        actionButton(
          "Revoke this token",
          async () => {
            if (!confirm(`Revoke this token? ${identity} is hung up in ${room}, and this token's links stop working.`)) return;
            const { sessionsClosed } = await api.tokens.revokeToken({ room, tokenId: issued.tokenId });
            toast(`Revoked the token of ${identity} (${sessionsClosed} sessions closed)`);
          },
          { class: "danger", "data-testid": "revoke-token" },
        ),
      ),
      isLoopback(base) &&
        h(
          "p",
          { class: "warning", "data-testid": "link-warning" },
          `These links use ${new URL(base).host}, which only this computer can open. For other devices, start vigil with --public-url set to the address they reach it at.`,
        ),
      h("h3", {}, "OBS Studio (Settings → Stream → Service: WHIP)"),
      copyField("Server", `${base}${issued.whipPath}`, "obs-server"),
      copyField("Bearer Token", issued.token, "obs-token"),
      h("h3", {}, "Browser"),
      copyField("Join link", joinLink, "join-link"),
      h("p", {}, h("a", { href: joinLink, target: "_blank", rel: "noopener" }, "Open the join page"), ` as ${identity}`),
    );
  };

  const createForm = () => {
    const field = (label, name, attrs = {}) => h("label", {}, label, h("input", { name, ...attrs }));
    const optional = (value) => (value === "" ? undefined : Number(value));
    const form = h(
      "form",
      {
        class: "card",
        onsubmit: async (event) => {
          event.preventDefault();
          const data = Object.fromEntries(new FormData(form));
          try {
            await api.rooms.createRoom({
              name: data.name,
              limits: { maxPublishers: optional(data.maxPublishers), maxViewers: optional(data.maxViewers) },
              alarmRules: {
                stallAfterMs: optional(data.stallAfterMs),
                minBitrateBps: data.minBitrateBps === "" ? undefined : BigInt(data.minBitrateBps),
                maxKeyframeIntervalMs: optional(data.maxKeyframeIntervalMs),
              },
            });
            toast(`Room ${data.name} created`);
            form.reset();
          } catch (e) {
            const code = ConnectError.from(e).code;
            toast(code === Code.AlreadyExists ? `A room named ${data.name} already exists` : errorText(e), "error");
          }
        },
      },
      h("h2", {}, "New room"),
      field("Name", "name", { required: true, pattern: "[A-Za-z0-9_.\\-]{1,64}", placeholder: "site-1", "data-testid": "room-name" }),
      h(
        "fieldset",
        {},
        h("legend", {}, "Limits (empty: unlimited)"),
        field("Max publishers", "maxPublishers", { type: "number", min: 0 }),
        field("Max viewers", "maxViewers", { type: "number", min: 0 }),
      ),
      h(
        "fieldset",
        {},
        h("legend", {}, "Alarms (empty: server default)"),
        field("Stalled after (ms)", "stallAfterMs", { type: "number", min: 100, placeholder: "3000", "data-testid": "stall-after" }),
        field("Minimum bitrate (bit/s, 0 = off)", "minBitrateBps", { type: "number", min: 0, placeholder: "50000" }),
        // The wire name is older than its meaning: how long a keyframe asked
        // for a viewer may take (api.md, "Alarms").
        field("Keyframe wait (ms, 0 = off)", "maxKeyframeIntervalMs", { type: "number", min: 0, placeholder: "5000" }),
      ),
      h("button", { type: "submit", "data-testid": "create-room" }, "Create room"),
    );
    return form;
  };

  replace(
    app,
    header({ title: "Rooms", credential, signOut }),
    h(
      "main",
      { class: "rooms" },
      error,
      h(
        "section",
        { class: "card" },
        h("table", {}, h("thead", {}, h("tr", {}, ["Room", "Publishers", "Viewers", "Streams", "Created", ""].map((t) => h("th", {}, t)))), list),
      ),
      tokenPanel,
      cameras,
      createForm(),
    ),
  );

  refresh().then(readStreams);
  // One round at a time: a slow server is not asked twice over.
  let reading = false;
  setInterval(async () => {
    if (reading) return;
    reading = true;
    await readStreams().finally(() => (reading = false));
  }, 3000);
  // Rooms and their counts change with events; re-read on each (coalesced).
  let pending = null;
  followEvents(
    api,
    {},
    {
      onEvent: (event) => {
        cameraSections.get(event.room)?.onEvent(event);
        // A gap may have hidden camera events too.
        if (event.kind.case === "historyGap") for (const section of cameraSections.values()) section.load();
        pending ??= setTimeout(() => {
          pending = null;
          refresh();
        }, 200);
      },
      // Subscribed, then read: a camera's state cannot fall between.
      onState: (state) => {
        if (state === "live") for (const section of cameraSections.values()) section.load();
      },
      onError: (e) => {
        error.textContent = `Live updates stopped: ${errorText(e)}`;
      },
    },
  );
}
