// The end of an e2e test's lab: its watcher stopped, the lab destroyed, its folders removed,
// and the run time printed (the notes quote it).

import { rmSync } from 'node:fs';
import { readClusterInfo, stopWatcher } from '../../src/lab/cluster.ts';
import { destroyLab, openLab } from '../../src/lab/lab.ts';

export async function tearDownLab(name: string, stateDir: string, folders: readonly string[], report?: { what: string; started: number }): Promise<void> {
  const l = await openLab(name, { stateDir }).catch(() => undefined);
  if (l) stopWatcher(await readClusterInfo(l));
  await destroyLab(name, { stateDir });
  for (const f of [...folders, stateDir]) rmSync(f, { recursive: true, force: true });
  if (report) console.log(`${report.what} on the real kernel: ${((Date.now() - report.started) / 1000).toFixed(1)} s`);
}
