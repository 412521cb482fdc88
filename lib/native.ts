// Loading the project's small C addons (memlog/native, server/native; built by `npm run build`): each tool works
// without its addon, so a failed load is a reason to report, not an error.
import { createRequire } from 'node:module';

/** A loaded addon, or null with the reason it is unavailable. */
export interface AddonLoad<T> {
  addon: T | null;
  reason: string;
}

/**
 * Loads the addon at `path` (absolute; callers keep the result); `what` names it in reasons ("the batch writer").
 * Unavailable when C1M_NO_NATIVE=1, off Linux, not built, or when `check` refuses what loaded.
 */
export function loadAddon<T>(path: string, what: string, check: (m: T) => boolean = () => true): AddonLoad<T> {
  if (process.env.C1M_NO_NATIVE === '1') return { addon: null, reason: 'C1M_NO_NATIVE=1' };
  if (process.platform !== 'linux') return { addon: null, reason: `${what} is Linux only (${process.platform})` };
  try {
    const addon = createRequire(import.meta.url)(path) as T;
    return check(addon) ? { addon, reason: '' } : { addon: null, reason: `${path} does not have ${what}'s functions` };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'MODULE_NOT_FOUND' ? `${path} is not built (npm run build)` : (err as Error).message.split('\n')[0]!;
    return { addon: null, reason: why };
  }
}
