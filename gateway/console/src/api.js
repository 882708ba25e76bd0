// The control API, over gRPC-web on this origin: the same services admin
// tools call with gRPC.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { EventService } from "./gen/vigil/v1/events_pb.js";
import { RoomService } from "./gen/vigil/v1/rooms_pb.js";
import { TokenService } from "./gen/vigil/v1/tokens_pb.js";
import { sleep } from "./dom.js";

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

/** Errors that retrying will not fix. */
export function isFinal(e) {
  const code = ConnectError.from(e).code;
  return [Code.Unauthenticated, Code.PermissionDenied, Code.NotFound, Code.InvalidArgument].includes(code);
}

/**
 * Follows the event feed: calls `onEvent` for each event, reconnects after a
 * dropped connection (resuming after the last event seen), and stops on a
 * final error (reported to `onError`) or when the returned function is called.
 */
export function followEvents(api, request, { onEvent, onError = () => {}, onState = () => {} }) {
  const abort = new AbortController();
  let afterId;
  (async () => {
    let backoff = 500;
    while (!abort.signal.aborted) {
      try {
        onState("connecting");
        const stream = api.events.watch({ ...request, afterId }, { signal: abort.signal });
        onState("live");
        for await (const event of stream) {
          afterId = event.id;
          backoff = 500;
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
      onState("reconnecting");
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 8000);
    }
  })();
  return () => abort.abort();
}
