// Builds memlog's netlink addon (memlog/native, C, node-gyp) when its sources are newer than the built module.
// A machine without a C compiler still gets a working memlog (it reads /proc/net/tcp instead), so a failed build
// warns and exits 0; the test suite checks the addon loads, so CI does not miss a broken build.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dir = fileURLToPath(new URL('../memlog/native/', import.meta.url));
const out = dir + 'build/Release/sockdiag.node';
const mtime = (p) => statSync(p).mtimeMs;
if (process.env.C1M_NO_NATIVE === '1') process.exit(0);
if (existsSync(out) && mtime(out) > Math.max(mtime(dir + 'sockdiag.c'), mtime(dir + 'binding.gyp'))) process.exit(0);

// Inside `npm run`, npm puts its own node-gyp on PATH and passes its nodedir setting in the environment.
const r = spawnSync('node-gyp', ['rebuild', '--directory', dir], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
if (r.status !== 0) {
  const why = r.error ? `${r.error.code ?? r.error.message} (run it through npm run build)` : r.stderr.split('\n').filter((l) => /error/i.test(l)).slice(0, 5).join('\n');
  process.stderr.write(`build: memlog's netlink addon was not built; memlog will count connections from /proc/net/tcp instead.\n${why}\n`);
  process.exit(0);
}
process.stderr.write('build: memlog/native/build/Release/sockdiag.node\n');
