// The client package bundled for the web console (bff-runtime/src/serve/console-client.js):
// one readable ES module, not minified, so the console's source can be read; and
// a test's React app (React reads NODE_ENV, here production).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

// Paths in the bundle's comments are relative to the repository, wherever this runs.
const repository = fileURLToPath(new URL("../..", import.meta.url));

const result = await build({ entryPoints: [process.argv[2]], bundle: true, format: "esm", legalComments: "none", write: false, absWorkingDir: repository,
  define: { "process.env.NODE_ENV": '"production"' },
  // The package's optional peer (React) resolves from these test clients' packages.
  nodePaths: [fileURLToPath(new URL("node_modules", import.meta.url))] });
process.stdout.write(result.outputFiles[0].text);
