// An entry point bundled with esbuild into one ES module:
// - `bundle.mjs ENTRY` prints it readable (not minified): the web console's copy of
//   the client package (bff-runtime/src/serve/console-client.js), a test's React app;
// - `bundle.mjs ENTRY --gzipped-size` prints only its size as an application ships
//   it: minified and gzipped at the highest level.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const [entry, flag] = process.argv.slice(2);
const sizeOnly = flag === "--gzipped-size";
const result = await build({
  entryPoints: [entry],
  bundle: true,
  format: "esm",
  minify: sizeOnly,
  legalComments: "none",
  write: false,
  // Paths in the bundle's comments are relative to the repository, wherever this runs.
  absWorkingDir: fileURLToPath(new URL("../..", import.meta.url)),
  // React reads NODE_ENV.
  define: { "process.env.NODE_ENV": '"production"' },
  // The package's optional peer (React) resolves from these test clients' packages.
  nodePaths: [fileURLToPath(new URL("node_modules", import.meta.url))],
});
const bytes = result.outputFiles[0].contents;
process.stdout.write(sizeOnly ? `${gzipSync(bytes, { level: 9 }).length}\n` : bytes);
