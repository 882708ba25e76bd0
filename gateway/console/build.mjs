// Builds dist/ (what the vigil binary embeds) from src/. Output is
// deterministic, so CI can rebuild and compare with the committed dist/.
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { build } from "esbuild";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome111", "firefox115", "safari16"],
  legalComments: "none",
  outfile: "dist/app.js",
  logLevel: "warning",
});
for (const file of ["index.html", "app.css", "favicon.svg"]) copyFileSync(`src/${file}`, `dist/${file}`);
