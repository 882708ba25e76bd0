// Events and alarms in words, for people.

import { AlarmKind, CallEndReason, LeaveReason, SessionRole, TrackKind } from "./api.js";
import { stateLabel } from "./cameras.js";
import { formatBitrate, formatTime } from "./dom.js";

/** "2.5 %" */
export const percent = (fraction) => `${(fraction * 100).toFixed(1)} %`;

/**
 * A stream's GetStreamStats in one line, as the wall's tiles and the rooms
 * page show it: the bitrate of all its tracks, the video's picture size and
 * frame rate, and the worst track's loss over the last 2 s (before repair);
 * `null` while the server has no figures yet.
 */
export function streamSummary(s) {
  const tracks = s?.tracks ?? [];
  if (!tracks.length) return null;
  const video = tracks.find((t) => t.kind === TrackKind.VIDEO);
  const bitrate = tracks.reduce((sum, t) => sum + Number(t.bitrateBps), 0);
  const loss = Math.max(...tracks.map((t) => t.loss));
  const size = video?.width ? ` · ${video.width}×${video.height}` : "";
  const fps = video?.framesPerSecond ? ` · ${Math.round(video.framesPerSecond)} fps` : "";
  return {
    text: `${formatBitrate(bitrate)}${size}${fps} · ${percent(loss)} lost`,
    bitrate,
    width: video?.width ?? 0,
    height: video?.height ?? 0,
    loss,
    poor: Boolean(s.poorLink),
  };
}

export const ALARM_NAMES = {
  [AlarmKind.STALLED]: "stalled",
  [AlarmKind.LOW_BITRATE]: "low bitrate",
  [AlarmKind.KEYFRAME_INTERVAL]: "keyframe overdue",
  [AlarmKind.ROOM_FULL]: "room full",
  [AlarmKind.CAMERA_OFFLINE]: "camera offline",
};

const CALL_END_REASONS = {
  [CallEndReason.ENDED]: "hung up",
  [CallEndReason.CALLEE_LEFT]: "callee left",
  [CallEndReason.CALLER_LEFT]: "caller left",
  [CallEndReason.NOT_ANSWERED]: "not answered",
  [CallEndReason.ROOM_CLOSED]: "room closed",
};

const LEAVE_REASONS = {
  [LeaveReason.LEFT]: "left",
  [LeaveReason.HUNG_UP]: "was hung up",
  [LeaveReason.TIMED_OUT]: "timed out",
  [LeaveReason.ROOM_CLOSED]: "left: room closed",
  [LeaveReason.PUBLISHER_GONE]: "stopped watching: stream ended",
  [LeaveReason.SERVER_SHUTDOWN]: "left: server shut down",
  [LeaveReason.REPLACED]: "reconnected: a new session took over",
  [LeaveReason.CALL_ENDED]: "left: call ended",
  [LeaveReason.ROOM_FULL]: "turned away: room full",
  [LeaveReason.NODE_LOST]: "left: its node was lost",
};

export const kindName = (kind) => (kind === TrackKind.VIDEO ? "video" : "audio");

/** { text, alarm } for an event, or null for events not worth showing. */
export function describe(event) {
  const who = event.identity || event.room;
  const { case: kind, value } = event.kind;
  switch (kind) {
    case "roomCreated":
      return { text: `Room ${event.room} created` };
    case "roomDeleted":
      return { text: `Room ${event.room} deleted`, alarm: true };
    case "roomUpdated":
      return { text: `Room ${event.room}: settings changed` };
    case "bansChanged":
      return { text: value.bans.length ? `Kept out: ${value.bans.map((b) => `${b.identity} until ${formatTime(Number(b.untilUnixMs))}`).join(", ")}` : "No one is kept out any more" };
    case "tokensRevoked":
      return { text: value.tokenId ? `A token of ${who} was revoked` : `Every token of room ${event.room} was revoked` };
    case "participantJoined":
      return value.role === SessionRole.PUBLISHER
        ? { text: `${who} started publishing` }
        : { text: `${who} is watching ${value.stream}` };
    case "participantLeft":
      return value.role === SessionRole.PUBLISHER
        ? { text: `${who} stopped publishing (${LEAVE_REASONS[value.reason] ?? "left"})`, alarm: value.reason === LeaveReason.TIMED_OUT }
        : { text: `${who} ${LEAVE_REASONS[value.reason] ?? "left"} (${value.stream})` };
    case "trackPublished":
      return { text: `${who} publishes ${kindName(value.kind)} (${value.codec})` };
    case "trackUnpublished":
      return null;
    case "trackMuted":
      return { text: `${who}: ${kindName(value.kind)} ${value.muted ? "muted" : "unmuted"}` };
    case "callRequested":
      return { text: `${value.caller} calls ${value.callee} (ringing)` };
    case "callConnected":
      return { text: `${value.callee} answered ${value.caller}: in call` };
    case "callEnded":
      return { text: `Call of ${value.caller} to ${value.callee} ended (${CALL_END_REASONS[value.reason] ?? "ended"})` };
    case "alarmRaised":
      return { text: `ALARM ${value.stream || event.room}: ${ALARM_NAMES[value.kind] ?? "alarm"}${value.detail ? ` (${value.detail})` : ""}`, alarm: true };
    case "alarmCleared":
      return { text: `Cleared ${value.stream || event.room}: ${ALARM_NAMES[value.kind] ?? "alarm"}` };
    case "alarmAcknowledged":
      return { text: `${value.by} acknowledged ${value.stream || event.room}: ${ALARM_NAMES[value.kind] ?? "alarm"}` };
    case "cameraStateChanged":
      // Not an alarm line: CAMERA_OFFLINE is the alarm, once it lasts.
      return { text: `Camera ${who}: ${stateLabel(value.state)}${value.detail ? ` (${value.detail})` : ""}` };
    case "cameraRemoved":
      return { text: `Camera ${who} removed` };
    case "historyGap":
      return { text: "Some events were missed while disconnected" };
    default:
      return null;
  }
}
