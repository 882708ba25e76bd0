// The control API, over gRPC-web on this origin: the same services admin
// tools call with gRPC.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { EventService } from "./gen/vigil/v1/events_pb.js";
import { RoomService } from "./gen/vigil/v1/rooms_pb.js";
import { TokenService } from "./gen/vigil/v1/tokens_pb.js";
import { sleep } from "./dom.js";
import { Backoff } from "./retry.js";

export { Code, ConnectError };
export * from "./gen/vigil/v1/common_pb.js";
export * from "./gen/vigil/v1/events_pb.js";
export * from "./gen/vigil/v1/rooms_pb.js";

/** Clients for the three services, sending `credential` as a Bearer token. */
export function connect(credential) {
  const transport = createGrpcWebTransport({
    baseUrl: location.origin,
    interceptors: [
      (next) => (request) => {
        if (credential?.secret) request.header.set("authorization", `Bearer ${credential.secret}`);
        return next(request);
      },
    ],
  });
  return {
    rooms: createClient(RoomService, transport),
    tokens: createClient(TokenService, transport),
    events: createClient(EventService, transport),
  };
}

/**
 * Every item of a paged list RPC (`pageToken`/`nextPageToken`, AIP-158):
 * `list(request)` is called page after page and `field` of each collected.
 */
export async function allPages(list, request, field) {
  const items = [];
  let pageToken = "";
  do {
    const page = await list({ ...request, pageSize: 1000, pageToken });
    items.push(...page[field]);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return items;
}

/** Errors that retrying will not fix. */
export function isFinal(e) {
  const code = ConnectError.from(e).code;
  return [Code.Unauthenticated, Code.PermissionDenied, Code.NotFound, Code.InvalidArgument].includes(code);
}

/**
 * Follows the event feed: calls `onEvent` for each event, reconnects after a
 * dropped connection (resuming after the last event seen; the server sends
 * `HistoryGap` first if some are lost), and stops on a final error
 * (reported to `onError`) or when the returned function is called.
 * `afterId` (0: every retained event) replays history on the first
 * connection. `onState` hears "connecting", "live" (the server answered),
 * "reconnecting" (it did not, or the feed ended: trying again after 0.5 s,
 * 1 s, 2 s… up to 10 s) and "failed".
 */
export function followEvents(api, request, { onEvent, onError = () => {}, onState = () => {}, afterId: from } = {}) {
  const abort = new AbortController();
  let afterId = from;
  (async () => {
    const backoff = new Backoff(500, 10000);
    while (!abort.signal.aborted) {
      let liveAt = 0;
      try {
        onState("connecting");
        const stream = api.events.watch(
          { ...request, afterId },
          {
            signal: abort.signal,
            onHeader: () => {
              liveAt = Date.now();
              onState("live");
            },
          },
        );
        for await (const event of stream) {
          // A gap after a lag has id 0: never resume before what was seen.
          if (afterId === undefined || event.id > afterId) afterId = event.id;
          onEvent(event);
        }
      } catch (e) {
        if (abort.signal.aborted) return;
        if (isFinal(e)) {
          onState("failed");
          onError(ConnectError.from(e));
          return;
        }
      }
      if (abort.signal.aborted) return;
      // A feed that lasted starts over at the shortest delay; one the
      // server keeps ending at once does not spin.
      if (liveAt && Date.now() - liveAt > 10000) backoff.reset();
      onState("reconnecting");
      await sleep(backoff.next());
    }
  })();
  return () => abort.abort();
}
