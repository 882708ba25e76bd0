// The console's entry: one page, routed by path.
//
//   /console/                 sign in, then rooms (admin key)
//   /console/rooms/{room}     the dispatcher's wall of one room
//   /join/{room}              a field user publishes (token in #token=)
//   /watch/{room}/{stream}    a standalone WHEP player (embeddable)

import { h, replace } from "./dom.js";
import { consolePage } from "./pages/console.js";
import { joinPage } from "./pages/join.js";
import { watchPage } from "./pages/watch.js";

const app = document.getElementById("app");
const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);

switch (parts[0]) {
  case "join":
    joinPage(app, parts[1]);
    break;
  case "watch":
    watchPage(app, parts[1], parts[2]);
    break;
  case "console":
    consolePage(app, parts.slice(1));
    break;
  default:
    replace(app, h("p", {}, "Nothing here. ", h("a", { href: "/console/" }, "Open the console")));
}
