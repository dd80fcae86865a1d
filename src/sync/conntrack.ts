// Connection tracking entries of the node's network namespace: listing them and deleting the
// ones that must not outlive a change.
//
// Why: the first rule of PCTL-FORWARD returns every packet of an established connection, so a
// conntrack entry keeps a flow alive whatever the rules say now. Two cases must end it:
// - an address that left the model (pod deleted, IP changed, sandbox torn down by CNI DEL): a
//   pod that gets the address next must never inherit the old pod's flows (always done);
// - a flow that a policy change now denies (only with `--revoke-established`).
// `conntrack -D` exits 1 when nothing matched: that is success here.

import { type Runner } from './runner.ts';

export class ConntrackError extends Error {}

export interface ConntrackFlow {
  readonly protocol: 'tcp' | 'udp' | 'sctp' | 'icmp' | string;
  /** The original direction: the connection's initiator and the address it asked for. */
  readonly src: string;
  readonly dst: string;
  readonly sport?: number;
  readonly dport?: number;
  /** Reply direction source: differs from `dst` after DNAT (a Service). */
  readonly replySrc?: string;
  readonly replyDst?: string;
  /** Reply direction source port: the port the answers come from (after DNAT, the backend's). */
  readonly replySport?: number;
  /** Reply direction destination port: the port the answers go to (the initiator's, after its SNAT). */
  readonly replyDport?: number;
  readonly state?: string;
}

async function del(runner: Runner, args: readonly string[]): Promise<number> {
  const r = await runner.run('conntrack', ['-D', ...args]);
  // "N flow entries have been deleted." is printed on stderr by conntrack-tools.
  const n = Number(/(\d+) flow entr/.exec(r.stderr)?.[1] ?? 0);
  if (r.exitCode === 0 || (r.exitCode === 1 && n === 0 && !/error|invalid|unknown|not found|permission/i.test(r.stderr.replace(/0 flow entries have been deleted\.?/, '')))) return n;
  throw new ConntrackError(`conntrack -D ${args.join(' ')} failed with exit code ${r.exitCode}: ${r.stderr.trim() || '(no output)'}`);
}

/** Above this many entries of the addresses, they are deleted by address (4 per address), not one by one. */
const FLOWS_ONE_BY_ONE = 8;

/**
 * Delete every entry with one of these addresses as the source or the destination, in either
 * direction (original and reply: a DNATed connection to a Service names the backend only in
 * its reply tuple). Returns the number of entries deleted.
 *
 * One listing first, then only the entries found: usually there are none (a pod that never
 * talked) or a few, and each `conntrack` process costs tens of ms on CNI DEL's path. Sound
 * because callers run this once the rules without the addresses are in force: a new connection
 * of theirs is dropped before its entry is confirmed, so no entry appears after the listing.
 */
export async function deleteAddressFlows(runner: Runner, addresses: Iterable<string>): Promise<number> {
  const ips = new Set(addresses);
  if (ips.size === 0) return 0;
  const has = (ip: string | undefined) => ip !== undefined && ips.has(ip);
  const flows = (await listFlows(runner)).filter((f) => has(f.src) || has(f.dst) || has(f.replySrc) || has(f.replyDst));
  let n = 0;
  if (flows.length <= FLOWS_ONE_BY_ONE) {
    try {
      for (const f of flows) n += await deleteFlow(runner, f);
      return n;
    } catch {
      // A tuple conntrack will not take (a protocol it names but cannot match on): by address
      // below, which needs no tuple, so one odd entry never blocks a DEL.
    }
  }
  for (const ip of ips) {
    for (const flag of ['-s', '-d', '-r', '-q']) n += await del(runner, [flag, ip]);
  }
  return n;
}

/** Delete the entries of one flow (original direction tuple). */
export async function deleteFlow(runner: Runner, f: ConntrackFlow): Promise<number> {
  const args = ['-p', f.protocol, '-s', f.src, '-d', f.dst];
  if (f.sport !== undefined) args.push('--sport', String(f.sport));
  if (f.dport !== undefined) args.push('--dport', String(f.dport));
  return del(runner, args);
}

/** Every IPv4 entry of the namespace. */
export async function listFlows(runner: Runner): Promise<ConntrackFlow[]> {
  const r = await runner.run('conntrack', ['-L', '-f', 'ipv4', '-o', 'extended']);
  if (r.exitCode !== 0) throw new ConntrackError(`conntrack -L failed with exit code ${r.exitCode}: ${r.stderr.trim() || '(no output)'}`);
  return parseConntrackList(r.stdout);
}

/**
 * Parse `conntrack -L -o extended` lines, e.g.
 * `ipv4 2 tcp 6 431999 ESTABLISHED src=10.244.1.2 dst=10.244.2.3 sport=4000 dport=80 src=10.244.2.3 dst=10.244.1.2 sport=80 dport=4000 [ASSURED] mark=0 use=1`.
 * The first src/dst/sport/dport are the original tuple, the second the reply tuple.
 */
export function parseConntrackList(text: string): ConntrackFlow[] {
  const out: ConntrackFlow[] = [];
  for (const line of text.split('\n')) {
    const t = line.trim().split(/\s+/);
    if (t.length < 4 || t[0] !== 'ipv4') continue;
    // A protocol conntrack has no module for prints as `unknown` and its number: kept as the
    // number, which `conntrack -p` takes too.
    const protocol = t[2] === 'unknown' && /^\d+$/.test(t[3] ?? '') ? t[3]! : t[2]!;
    const kv: Record<string, string[]> = {};
    let state: string | undefined;
    for (const tok of t.slice(4)) {
      const eq = tok.indexOf('=');
      if (eq < 0) {
        if (/^[A-Z_]+$/.test(tok) && state === undefined) state = tok;
        continue;
      }
      (kv[tok.slice(0, eq)] ??= []).push(tok.slice(eq + 1));
    }
    const src = kv.src?.[0];
    const dst = kv.dst?.[0];
    if (!src || !dst) continue;
    const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
    const sport = num(kv.sport?.[0]);
    const dport = num(kv.dport?.[0]);
    const replySport = num(kv.sport?.[1]);
    const replyDport = num(kv.dport?.[1]);
    out.push({
      protocol,
      src,
      dst,
      ...(sport !== undefined ? { sport } : {}),
      ...(dport !== undefined ? { dport } : {}),
      ...(kv.src?.[1] ? { replySrc: kv.src[1] } : {}),
      ...(kv.dst?.[1] ? { replyDst: kv.dst[1] } : {}),
      ...(replySport !== undefined ? { replySport } : {}),
      ...(replyDport !== undefined ? { replyDport } : {}),
      ...(state ? { state } : {}),
    });
  }
  return out;
}
