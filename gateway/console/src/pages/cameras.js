// The rooms page's IP cameras of one room: the list (identity, URL with the
// password masked by the server, transport, on demand, state with its
// detail, tracks with those WebRTC cannot play marked), a form to add one,
// an edit form per camera (an empty password keeps the stored one), and
// removal after a confirmation. Errors from the server are shown in place.
// States follow the event feed (the page hands its events to `onEvent`).

import { CameraTransport, Code, ConnectError } from "../api.js";
import { RoomCameras, bareUrl, stateLabel, stateName, trackList, transportName, troubled } from "../cameras.js";
import { actionButton, errorText, formatTime, h, replace, toast } from "../dom.js";

export class CameraSection {
  constructor({ api, room }) {
    this.api = api;
    this.room = room;
    this.list = h("tbody", { "data-testid": "camera-list" });
    this.error = h("p", { class: "error", role: "alert", "data-testid": "cameras-error" });
    this.cameras = new RoomCameras({
      api,
      room,
      onList: () => this.render(),
      onChange: () => this.render(),
    });
    this.addForm = cameraForm({ submitLabel: "Add camera", onSubmit: (fields) => this.add(fields) });
    this.adding = h("details", { class: "add-camera", "data-testid": "add-ip-camera" }, h("summary", {}, "Add an IP camera"), this.addForm.el);
    this.table = h(
      "table",
      { class: "cameras" },
      h("thead", {}, h("tr", {}, ["Camera", "URL", "Transport", "On demand", "State", "Tracks", ""].map((t) => h("th", {}, t)))),
      this.list,
    );
    this.el = h("section", { class: "card camera-section", "data-testid": "cameras", "data-room": room }, h("h2", {}, `IP cameras of ${room}`), this.error, this.table, this.adding);
  }

  async load() {
    try {
      await this.cameras.load();
      this.error.textContent = "";
    } catch (e) {
      this.error.textContent = `Cannot list cameras: ${errorText(e)}`;
    }
  }

  onEvent(event) {
    this.cameras.onEvent(event);
  }

  /**
   * The rows, made again; an edit under way stays open (and focused) under
   * its camera's row while the camera is there.
   */
  render() {
    const available = this.cameras.available;
    this.adding.hidden = !available;
    const cameras = [...this.cameras.cameras.values()].sort((a, b) => a.identity.localeCompare(b.identity));
    if (!cameras.length) {
      replace(this.list, h("tr", {}, h("td", { colSpan: 7, class: "muted" }, available ? "No IP cameras: add one below." : "This server does not pull IP cameras.")));
      return;
    }
    const listed = new Set(cameras.map((c) => c.identity));
    for (const tr of [...this.list.children]) {
      const identity = tr.dataset.camera ?? tr.dataset.editing;
      if (identity === undefined || !listed.has(identity)) tr.remove();
    }
    let previous = null;
    for (const camera of cameras) {
      const row = this.row(camera);
      const old = this.rowOf(camera.identity);
      if (old) old.replaceWith(row);
      else if (previous) previous.after(row);
      else this.list.prepend(row);
      const editing = this.list.querySelector(`tr[data-editing="${CSS.escape(camera.identity)}"]`);
      previous = editing ?? row;
    }
  }

  rowOf(identity) {
    return this.list.querySelector(`tr[data-camera="${CSS.escape(identity)}"]`);
  }

  row(camera) {
    const since = Number(camera.stateSinceUnixMs);
    return h(
      "tr",
      { "data-camera": camera.identity, "data-camera-state": stateName(camera.state) },
      h("td", {}, h("strong", {}, camera.identity)),
      h("td", {}, h("code", { "data-testid": "camera-url" }, camera.url)),
      h("td", { "data-testid": "camera-transport" }, transportName(camera.transport)),
      h("td", { "data-testid": "camera-on-demand" }, camera.onDemand ? "yes" : "no"),
      h(
        "td",
        { "data-testid": "camera-state" },
        h("span", { class: troubled(camera.state) ? "camera-state troubled" : "camera-state" }, stateLabel(camera.state)),
        since ? h("span", { class: "muted" }, ` since ${formatTime(since)}`) : null,
        camera.stateDetail ? h("div", { class: "detail muted", "data-testid": "camera-detail" }, camera.stateDetail) : null,
      ),
      h("td", { "data-testid": "camera-tracks" }, camera.tracks.length ? trackList(camera.tracks) : h("span", { class: "muted" }, "—")),
      h(
        "td",
        { class: "actions" },
        h("button", { type: "button", class: "secondary", "data-action": "edit-camera", onclick: () => this.edit(camera.identity) }, "Edit"),
        actionButton("Remove", () => this.remove(camera.identity), { class: "danger", "data-action": "remove-camera" }),
      ),
    );
  }

  async add(fields) {
    try {
      const asked = performance.now();
      this.cameras.put(await this.api.rooms.addCamera({ room: this.room, ...fields }), asked);
    } catch (e) {
      const code = ConnectError.from(e).code;
      throw code === Code.AlreadyExists ? new Error(`${this.room} already has a camera named ${fields.identity}.`) : e;
    }
    toast(`Camera ${fields.identity} added to ${this.room}`);
    this.adding.open = false;
  }

  /** Opens the edit form under the camera's row. */
  edit(identity) {
    const camera = this.cameras.get(identity);
    const row = this.rowOf(identity);
    if (!camera || !row) return;
    this.list.querySelector("tr.editing")?.remove();
    const form = cameraForm({
      camera,
      submitLabel: "Save",
      onSubmit: async (fields) => {
        const asked = performance.now();
        this.cameras.put(await this.api.rooms.updateCamera({ room: this.room, identity, ...fields }), asked);
        editing.remove();
        toast(`Camera ${identity} saved`);
      },
      onCancel: () => editing.remove(),
    });
    const editing = h("tr", { class: "editing", "data-editing": identity }, h("td", { colSpan: 7 }, form.el));
    row.after(editing);
    form.focus();
  }

  async remove(identity) {
    if (!confirm(`Remove camera ${identity} from ${this.room}? Vigil stops pulling it, and whoever watches it is cut off.`)) return;
    try {
      await this.api.rooms.removeCamera({ room: this.room, identity });
      this.error.textContent = "";
    } catch (e) {
      if (ConnectError.from(e).code !== Code.NotFound) {
        this.error.textContent = `Cannot remove ${identity}: ${errorText(e)}`;
        return;
      }
      // Already gone: the list says so below.
    }
    this.cameras.onEvent({ identity, kind: { case: "cameraRemoved" } });
    this.list.querySelector(`tr[data-editing="${CSS.escape(identity)}"]`)?.remove();
    toast(`Camera ${identity} removed`);
  }
}

/**
 * The add form, or with `camera` the edit form: for an edit, only the
 * fields changed are sent (UpdateCamera keeps the others), and an empty
 * password keeps the stored one unless "forget" is ticked. `onSubmit(fields)`
 * may throw: its error is shown in the form.
 */
function cameraForm({ camera, submitLabel, onSubmit, onCancel }) {
  const editing = Boolean(camera);
  const input = (name, attrs) => h("input", { name, "data-testid": `camera-${name}`, ...attrs });
  const identity = input("identity", { required: true, pattern: "[A-Za-z0-9_.\\-]{1,64}", placeholder: "e.g. gate", autocomplete: "off" });
  const url = input("url", { required: true, pattern: "[Rr][Tt][Ss][Pp][Ss]?://.+", placeholder: "rtsp://10.0.0.7:554/stream1", autocomplete: "off", value: editing ? bareUrl(camera.url) : "" });
  const username = input("username", { autocomplete: "off", value: camera?.username ?? "" });
  // Never filled in: the server does not return it, and the browser must not offer the admin key.
  const password = input("password", { type: "password", autocomplete: "new-password", placeholder: camera?.hasPassword ? "(unchanged)" : "" });
  const forget = h("input", { type: "checkbox", name: "forgetPassword", "data-testid": "camera-forget-password" });
  const transport = h(
    "select",
    { name: "transport", "data-testid": "camera-transport-select" },
    h("option", { value: String(CameraTransport.TCP), selected: camera?.transport !== CameraTransport.UDP }, "TCP (interleaved: passes firewalls, loses nothing)"),
    h("option", { value: String(CameraTransport.UDP), selected: camera?.transport === CameraTransport.UDP }, "UDP (less delay on a clean LAN)"),
  );
  const onDemand = h("input", { type: "checkbox", name: "onDemand", checked: Boolean(camera?.onDemand), "data-testid": "camera-on-demand-check" });
  const error = h("p", { class: "error", role: "alert", "data-testid": "camera-form-error" });
  const submit = h("button", { type: "submit", "data-testid": editing ? "save-camera" : "add-camera-submit" }, submitLabel);

  const fields = () => {
    const all = { url: url.value.trim(), username: username.value, transport: Number(transport.value), onDemand: onDemand.checked };
    if (!editing) return { identity: identity.value, ...all, password: password.value };
    const changed = {};
    if (all.url !== bareUrl(camera.url)) changed.url = all.url;
    if (all.username !== camera.username) changed.username = all.username;
    if (all.transport !== (camera.transport === CameraTransport.UDP ? CameraTransport.UDP : CameraTransport.TCP)) changed.transport = all.transport;
    if (all.onDemand !== camera.onDemand) changed.onDemand = all.onDemand;
    if (password.value) changed.password = password.value;
    else if (forget.checked) changed.password = "";
    return changed;
  };

  const form = h(
    "form",
    {
      class: "camera-form",
      autocomplete: "off",
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = "";
        submit.disabled = true;
        try {
          await onSubmit(fields());
          // The password leaves the page with the request.
          form.reset();
        } catch (e) {
          error.textContent = errorText(e);
        } finally {
          submit.disabled = false;
        }
      },
    },
    editing ? h("h3", {}, `Edit ${camera.identity}`) : h("label", {}, "Identity (the stream name viewers play)", identity),
    h("label", {}, "RTSP URL", url),
    h("div", { class: "row credentials" }, h("label", {}, "User name", username), h("label", {}, editing ? "Password (empty: keep)" : "Password", password)),
    editing && camera.hasPassword ? h("label", { class: "check" }, forget, "Forget the stored password") : null,
    h("label", {}, "Transport", transport),
    h("label", { class: "check" }, onDemand, "On demand (pulled only while someone watches)"),
    error,
    h(
      "div",
      { class: "row" },
      submit,
      onCancel ? h("button", { type: "button", class: "secondary", onclick: onCancel }, "Cancel") : null,
    ),
  );
  return { el: form, focus: () => (editing ? url : identity).focus() };
}
