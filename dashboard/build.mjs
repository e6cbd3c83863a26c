// Builds the dashboard into dist/: index.html plus assets/app.js and assets/app.css, all
// referenced by relative paths so the page works under any host, port and path prefix.
//   node build.mjs            one build (minified, with source maps)
//   node build.mjs --watch    rebuild on change, for development

import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as esbuild from 'esbuild';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');
const watch = process.argv.includes('--watch');

const options = {
  entryPoints: { app: join(root, 'src/main.js') },
  outdir: join(dist, 'assets'),
  bundle: true,
  format: 'esm',
  target: ['es2022', 'chrome111', 'firefox111', 'safari16.4'],
  minify: !watch,
  sourcemap: true,
  legalComments: 'linked',
  logLevel: 'info',
};

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

if (watch) {
  await copyFile(join(root, 'index.html'), join(dist, 'index.html'));
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  await esbuild.build(options);
  // index.html last: scripts/build-dashboard.sh takes it as the stamp of a complete build.
  await copyFile(join(root, 'index.html'), join(dist, 'index.html'));
}
