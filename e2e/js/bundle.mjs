// The client package bundled for the web console (bff-runtime/src/serve/console-client.js):
// one readable ES module, not minified, so the console's source can be read.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

// Paths in the bundle's comments are relative to the repository, wherever this runs.
const repository = fileURLToPath(new URL("../..", import.meta.url));

const result = await build({ entryPoints: [process.argv[2]], bundle: true, format: "esm", legalComments: "none", write: false, absWorkingDir: repository });
process.stdout.write(result.outputFiles[0].text);
