// Builds the project's two small C addons with node-gyp when their sources are newer than the built module:
// memlog's netlink reader (memlog/native) and the server's batch writer (server/native).
// A machine without a C compiler still gets working tools (memlog reads /proc/net/tcp instead, the server writes
// each socket from the main thread), so a failed build warns and exits 0; the test suites check that both addons
// load, so CI does not miss a broken build.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ADDONS = [
  { dir: '../memlog/native/', name: 'sockdiag', fallback: "memlog's netlink addon was not built; memlog will count connections from /proc/net/tcp instead" },
  { dir: '../server/native/', name: 'writer', fallback: "the server's native socket layer (batch writer, detached streams) was not built; the server will hold streams as libuv handles and write them from its main thread" },
];

if (process.env.C1M_NO_NATIVE === '1') process.exit(0);
const mtime = (p) => statSync(p).mtimeMs;
for (const { dir: rel, name, fallback } of ADDONS) {
  const dir = fileURLToPath(new URL(rel, import.meta.url));
  const out = `${dir}build/Release/${name}.node`;
  const sources = readdirSync(dir).filter((f) => /\.(c|h|gyp)$/.test(f));
  if (existsSync(out) && mtime(out) > Math.max(...sources.map((f) => mtime(dir + f)))) continue;
  // Inside `npm run`, npm puts its own node-gyp on PATH and passes its nodedir setting in the environment.
  const r = spawnSync('node-gyp', ['rebuild', '--directory', dir], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) {
    const why = r.error ? `${r.error.code ?? r.error.message} (run it through npm run build)` : r.stderr.split('\n').filter((l) => /error/i.test(l)).slice(0, 5).join('\n');
    process.stderr.write(`build: ${fallback}.\n${why}\n`);
    continue;
  }
  process.stderr.write(`build: ${rel.slice(3)}build/Release/${name}.node\n`);
}
