// The wall's alarm panel: the room's active and recent alarms (ListAlarms,
// then the event feed), each acknowledged with one click (AcknowledgeAlarm;
// every wall sees who did it), and an alert when one is raised: a short tone
// (on unless turned off) and a desktop notification (off unless turned on,
// which asks the browser's permission). Both choices are kept per browser.

import { actionButton, errorText, formatTime, h, replace } from "../dom.js";
import { ALARM_NAMES } from "../describe.js";

const SOUND_KEY = "vigil.alarmSound";
const NOTIFY_KEY = "vigil.alarmNotify";

export class AlarmPanel {
  constructor({ api, room }) {
    this.api = api;
    this.room = room;
    this.rows = new Map();
    this.list = h("ol", { class: "alarms", "data-testid": "alarms" });
    this.none = h("p", { class: "muted" }, "No alarms.");
    this.sound = toggle("Sound", "alarm-sound", localStorage.getItem(SOUND_KEY) !== "off", (on) => {
      localStorage.setItem(SOUND_KEY, on ? "on" : "off");
      if (on) tone();
    });
    this.notify = toggle("Desktop notifications", "alarm-notify", localStorage.getItem(NOTIFY_KEY) === "on" && notificationsAllowed(), async (on, input) => {
      if (on && !(await askNotifications())) {
        input.checked = false;
        return;
      }
      localStorage.setItem(NOTIFY_KEY, on ? "on" : "off");
    });
    this.el = h("section", { class: "alarm-panel" }, h("h2", {}, "Alarms"), h("div", { class: "row alarm-options" }, this.sound.el, this.notify.el), this.none, this.list);
  }

  /** Reads the room's alarms again (at start, and after a gap in the feed). */
  async load() {
    try {
      const { alarms } = await this.api.rooms.listAlarms({ room: this.room });
      this.rows.clear();
      replace(this.list);
      // Newest first from the server; appended in that order.
      for (const alarm of alarms) this.show(alarm, false);
    } catch (e) {
      this.none.textContent = `Alarms unavailable: ${errorText(e)}`;
    }
  }

  /** Takes the feed's alarm events. */
  onEvent(event) {
    const { case: kind, value } = event.kind;
    switch (kind) {
      case "alarmRaised": {
        const alarm = { id: event.id, kind: value.kind, stream: value.stream, identity: event.identity, detail: value.detail, raisedAtUnixMs: event.atUnixMs };
        this.show(alarm, true);
        this.alert(alarm);
        break;
      }
      case "alarmCleared":
        this.rows.get(value.alarmId)?.clear(event.atUnixMs);
        break;
      case "alarmAcknowledged":
        this.rows.get(value.alarmId)?.acknowledge({ by: value.by, atUnixMs: event.atUnixMs });
        break;
    }
  }

  show(alarm, newest) {
    if (this.rows.has(alarm.id)) return;
    const row = new AlarmRow(alarm, () => this.acknowledge(alarm.id));
    this.rows.set(alarm.id, row);
    if (newest) this.list.prepend(row.el);
    else this.list.append(row.el);
    this.none.hidden = true;
  }

  /**
   * Kinds of the alarms active on `stream` as listed here: what a tile
   * shows of an alarm raised before its feed (a camera that is not
   * publishing has no participant entry to say so).
   */
  activeKinds(stream) {
    return [...this.rows.values()].filter((row) => row.active && row.alarm.stream === stream).map((row) => row.alarm.kind);
  }

  async acknowledge(id) {
    const { alarm } = await this.api.rooms.acknowledgeAlarm({ room: this.room, alarmId: id });
    if (alarm?.acknowledged) this.rows.get(id)?.acknowledge(alarm.acknowledged);
  }

  alert(alarm) {
    const what = `${alarm.stream || this.room}: ${ALARM_NAMES[alarm.kind] ?? "alarm"}`;
    if (this.sound.input.checked) tone();
    if (this.notify.input.checked && notificationsAllowed()) {
      new Notification(`${what} (${this.room})`, { body: alarm.detail, tag: `vigil-alarm-${alarm.id}` });
    }
  }
}

class AlarmRow {
  constructor(alarm, onAcknowledge) {
    this.alarm = alarm;
    this.active = true;
    this.status = h("span", { class: "muted" });
    this.button = actionButton("Acknowledge", onAcknowledge, { class: "secondary small", "data-testid": "acknowledge" });
    this.el = h(
      "li",
      { "data-alarm-id": String(alarm.id), "data-alarm": ALARM_NAMES[alarm.kind] ?? "alarm", "data-stream": alarm.stream, "data-state": "active" },
      h("time", {}, formatTime(Number(alarm.raisedAtUnixMs))),
      " ",
      h("strong", {}, `${alarm.stream || "room"}: ${ALARM_NAMES[alarm.kind] ?? "alarm"}`),
      h("div", { class: "detail" }, alarm.detail),
      h("div", { class: "row" }, this.status, this.button),
    );
    if (alarm.clearedAtUnixMs != null) this.clear(alarm.clearedAtUnixMs);
    if (alarm.acknowledged) this.acknowledge(alarm.acknowledged);
  }

  clear(atUnixMs) {
    this.active = false;
    this.el.dataset.state = "cleared";
    this.cleared = `ended ${formatTime(Number(atUnixMs))}`;
    this.render();
  }

  acknowledge({ by, atUnixMs }) {
    this.el.dataset.acknowledged = by;
    this.button.hidden = true;
    this.seen = `seen by ${by} ${formatTime(Number(atUnixMs))}`;
    this.render();
  }

  render() {
    this.status.textContent = [this.cleared, this.seen].filter(Boolean).join(", ");
  }
}

function toggle(label, testid, checked, onChange) {
  const input = h("input", { type: "checkbox", checked, "data-testid": testid });
  input.addEventListener("change", () => onChange(input.checked, input));
  return { input, el: h("label", { class: "check" }, input, label) };
}

function notificationsAllowed() {
  return "Notification" in window && Notification.permission === "granted";
}

async function askNotifications() {
  if (!("Notification" in window)) return false;
  return (await Notification.requestPermission()) === "granted";
}

let audio;

/** A short two-note tone; a suspended AudioContext (no click yet) stays silent. */
function tone() {
  audio ??= new AudioContext();
  audio.resume();
  const at = audio.currentTime;
  for (const [frequency, start] of [[880, 0], [660, 0.18]]) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = frequency;
    gain.gain.setValueAtTime(0.15, at + start);
    gain.gain.exponentialRampToValueAtTime(0.001, at + start + 0.16);
    osc.connect(gain).connect(audio.destination);
    osc.start(at + start);
    osc.stop(at + start + 0.17);
  }
}
