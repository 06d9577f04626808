// Bytes of an entry point of the client package as an application ships it:
// bundled, minified (esbuild) and gzipped at the highest level.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";

const result = await build({ entryPoints: [process.argv[2]], bundle: true, minify: true, format: "esm", write: false });
console.log(gzipSync(result.outputFiles[0].contents, { level: 9 }).length);
