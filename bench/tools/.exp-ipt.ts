import { spawn } from 'node:child_process';
import { IncrementalCompiler } from '../../src/compiler/incremental.ts';
import { NFT } from '../../src/sync/backend.ts';
import { agentRunner } from '../../src/sync/agent-runner.ts';
import { Syncer } from '../../src/sync/syncer.ts';
import { addClusterPolicies } from '../cnps.ts';
import { generateCluster } from '../synthetic.ts';

function prestarted(): Promise<(input: string) => Promise<number>> {
  const p = spawn(NFT.restore, ['--noflush', '--wait=10'], { stdio: ['pipe', 'ignore', 'inherit'] });
  return new Promise((res) => setTimeout(() => res((input: string) => new Promise((done) => {
    const t = performance.now();
    p.on('exit', () => done(performance.now() - t));
    p.stdin!.end(input);
  })), 300));
}
async function timeRestore(input: string): Promise<number> { const f = await prestarted(); return f(input); }
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!.toFixed(1);

async function series(label: string, variants = ['plain']) {
  for (const v of variants) for (const n of [1, 20, 150]) {
    const xs: number[] = [];
    for (let i = 0; i < 7; i++) {
      const lines = ['*filter', `:PCTL-XT${i} - [0:0]`];
      for (let k = 0; k < n; k++) {
        const m = `-s 10.${k % 250}.0.0/16 -p tcp -m tcp --dport ${1000 + k}`;
        if (v === 'plain') lines.push(`-A PCTL-XT${i} ${m} -j RETURN`);
        else if (v === 'goto') lines.push(`-A PCTL-XT${i} ${m} -g ${targets[k % targets.length]}`);
        else if (v === 'set') lines.push(`-A PCTL-XT${i} ${m} -m set --match-set ${sets[k % sets.length]} src -j RETURN`);
        else if (v === 'comment') lines.push(`-A PCTL-XT${i} ${m} -m comment --comment "abcdefghijklmnopqrstuvwx cnp/tenant-wall-team03 Admin Pass ingress[0]" -j RETURN`);
        else if (v === 'log') lines.push(`-A PCTL-XT${i} ${m} -m hashlimit --hashlimit-upto 100/sec --hashlimit-burst 200 --hashlimit-name PCTL-drops-100-200 -j NFLOG --nflog-prefix "PCTL I cnp Admin 2 dxnwib23nojm" --nflog-group 1511 --nflog-size 128`);
      }
      lines.push('COMMIT');
      xs.push(await timeRestore(lines.join('\n') + '\n'));
      await timeRestore(`*filter\n-F PCTL-XT${i}\n-X PCTL-XT${i}\nCOMMIT\n`);
    }
    console.log(label, v, 'rules', n, 'median ms', med(xs));
  }
}
let targets: string[] = ['RETURN'];
let sets: string[] = [];
await series('empty-table');
if (process.argv[2] === 'big') {
  const c = generateCluster({ pods: 10_000, policies: 2_000, seed: 1 });
  addClusterPolicies(c, 100);
  const ic = new IncrementalCompiler(c.model, 'node-001', {});
  const rs = ic.ruleset();
  const syncer = new Syncer({ runner: agentRunner(), backend: { ...NFT, reason: 'exp' } });
  await syncer.sync(rs);
  console.log('chains', rs.chains.length, 'rules', rs.chains.reduce((n, c) => n + c.rules.length, 0));
  targets = rs.chains.map((c) => c.name).filter((n) => /^PCTL-[EIFD]-/.test(n)).slice(0, 50);
  sets = rs.sets.map((x) => x.name).filter((n) => n.startsWith('PCTL-p-')).slice(0, 50);
  await series('big-table', ['plain', 'goto', 'set', 'comment', 'log']);
  // -D by spec of a dispatch rule, and -X of an unreferenced chain
  const xs: number[] = [];
  for (let i = 0; i < 5; i++) {
    await timeRestore(`*filter\n:PCTL-XD${i} - [0:0]\n-A PCTL-IB-${i} -m set --match-set ${sets[i]} dst -m comment --comment "x" -g PCTL-XD${i}\nCOMMIT\n`);
    xs.push(await timeRestore(`*filter\n-D PCTL-IB-${i} -m set --match-set ${sets[i]} dst -m comment --comment "x" -g PCTL-XD${i}\n-X PCTL-XD${i}\nCOMMIT\n`));
  }
  console.log('delete-by-spec + -X median', med(xs));
}
process.exit(0);
