// Renders Ruleset data into `ipset restore` and `iptables-restore` text: the kernel's syntax,
// which the sync layer owns (the compiler produces data only; `policyctl compile` and the test
// tracer render through here too).
//
// The rule text follows the order iptables-save prints (-s, -d, -p, then matches in the order
// given, comment, target) so a rendered rule and the kernel's copy can be compared line for line
// (`--syn` is written as iptables-nft-save prints it back: `-m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN`).

import type { Chain, Hook, IpSet, Rule, Ruleset } from '../compiler/ruleset.ts';
import { hashText } from '../util/digest.ts';
import { append } from '../util/arrays.ts';

/**
 * The node's drop log (docs/design.md, "The drop log"): the NFLOG group our log rules send to,
 * how many bytes of each packet they copy (the IPv4 and transport headers the agent reads), and
 * the per-node rate limit: every log rule shares one hashlimit bucket (one name, no mode), so a
 * flood of denied packets costs the agent at most `ratePerSecond` log records a second however
 * many rules it crosses. Denied packets past the limit are still dropped, only not logged.
 * The kernel keeps a hashlimit table by name with the settings of the rule that created it, so
 * the name carries the rate and the burst: other settings get a table of their own.
 */
const DROP_LOG_RATE = 100;
const DROP_LOG_BURST = 200;
export const DROP_LOG = { group: 1511, copyBytes: 128, ratePerSecond: DROP_LOG_RATE, burst: DROP_LOG_BURST, limitName: `PCTL-drops-${DROP_LOG_RATE}-${DROP_LOG_BURST}` } as const;

/** the kernel keeps 255 characters of a comment; we keep to printable ASCII without quotes. */
export const MAX_COMMENT = 255;

export function sanitizeComment(text: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/["\\\u0000-\u001f\u007f-\uffff]/g, '_');
  return clean.length > MAX_COMMENT ? clean.slice(0, MAX_COMMENT - 3) + '...' : clean;
}

export const DEFAULT_MAXELEM = 1048576;

/** The maxelem a set is created with. */
export function maxelemOf(set: Pick<IpSet, 'runtime'>): number {
  return set.runtime?.maxelem ?? DEFAULT_MAXELEM;
}

export function renderSetCreate(set: Pick<IpSet, 'name' | 'type' | 'runtime'>, opts: { maxelem?: number } = {}): string {
  return `create ${set.name} ${set.type} family inet hashsize 1024 maxelem ${opts.maxelem ?? maxelemOf(set)}${set.runtime ? ` timeout ${set.runtime.timeout}` : ''}`;
}

/** Empty these sets, one `ipset restore` line each. */
export function renderSetFlush(sets: readonly Pick<IpSet, 'name'>[]): string {
  return sets.map((s) => `flush ${s.name}\n`).join('');
}

export function renderSetMember(setName: string, entry: string, nomatch?: boolean): string {
  return `add ${setName} ${entry}${nomatch ? ' nomatch' : ''}`;
}

/** The whole ipset payload: every set created and filled, in name order. */
export function renderIpsetRestore(sets: readonly IpSet[]): string {
  const lines: string[] = [];
  for (const s of sets) {
    lines.push(renderSetCreate(s));
    for (const m of s.members) lines.push(renderSetMember(s.name, m.entry, m.nomatch));
  }
  return lines.join('\n') + (lines.length ? '\n' : '');
}

/**
 * Characters of a rule id: 24 base32 characters, 120 bits of SHA-256. The sync layer takes two
 * rules with one id for the same rule, and the content includes tenant-chosen names, so ids
 * must not be searchable for collisions (about 2^60 hashes for any pair at 120 bits).
 */
export const RULE_ID_CHARS = 24;

/**
 * A digest of a rule's content, written at the front of its comment. The sync layer reads it
 * back from iptables-save to compare chains without depending on how iptables-save re-prints
 * matches (Calico Felix does the same).
 */
export function ruleId(rule: Rule): string {
  let id = ruleIds.get(rule);
  if (id === undefined) {
    // A log rule's rendering also depends on DROP_LOG (group, rate): a new version that changes
    // them must rewrite the log rules, so their ids include it.
    const parts: unknown[] = [rule.match, rule.action, rule.comment];
    if (rule.action.kind === 'log') parts.push(DROP_LOG);
    id = hashText(JSON.stringify(parts), RULE_ID_CHARS, 'rule');
    ruleIds.set(rule, id);
  }
  return id;
}

/**
 * Rules are immutable data, and the incremental compiler hands out the same Rule objects while
 * they do not change: remembering each object's id makes diffing and rendering an unchanged
 * chain cost a lookup per rule instead of a JSON text and a hash.
 */
const ruleIds = new WeakMap<Rule, string>();

/** `--syn`: of SYN, RST, ACK and FIN only SYN is set (the order iptables-save prints the mask in). */
const TCP_SYN_FLAGS = { mask: 'FIN,SYN,RST,ACK', set: 'SYN' } as const;

export function renderRuleArgs(rule: Rule): string[] {
  const m = rule.match;
  const a: string[] = [];
  if (m.srcNet) a.push('-s', m.srcNet);
  if (m.dstNet) a.push('-d', m.dstNet);
  if (m.protocol) a.push('-p', m.protocol);
  // Set lookups (an xt match each, the dearest test of a rule) come after the port and flag
  // tests (native payload compares under iptables-nft), which the kernel evaluates in the order
  // written: a packet to another port never reaches the lookup (bench part `dataplane`).
  // `-m tcp` is loaded once for a port and the flags (iptables-save prints them in one match,
  // the port first).
  let l4Loaded = false;
  if (m.dports && m.dports.length > 0) {
    if (!m.protocol) throw new Error(`rule "${rule.comment}" matches ports without a protocol`);
    const ports = m.dports.map((p) => (p.from === p.to ? `${p.from}` : `${p.from}:${p.to}`));
    if (m.dports.length === 1) {
      a.push('-m', m.protocol, '--dport', ports[0]!);
      l4Loaded = true;
    } else a.push('-m', 'multiport', '--dports', ports.join(','));
  }
  if (m.syn !== undefined) {
    if (m.protocol !== 'tcp') throw new Error(`rule "${rule.comment}" matches TCP flags without "protocol: tcp"`);
    if (!l4Loaded) a.push('-m', 'tcp');
    // `--syn` as iptables-save prints it (libxt_tcp expands it to the flags and their mask).
    if (!m.syn) a.push('!');
    a.push('--tcp-flags', TCP_SYN_FLAGS.mask, TCP_SYN_FLAGS.set);
  }
  // An address-type test: one lookup in the node's local routes, before the set lookups.
  // iptables-nft 1.8.9 keeps it as the xt match `addrtype` (revision 1) and iptables-nft-save
  // prints it back as written here (`!` before the option, `--src-type` before `--dst-type`).
  const at = m.addrType;
  if (at && (at.src || at.dst)) {
    a.push('-m', 'addrtype');
    if (at.src) a.push(...(at.src.negate ? ['!'] : []), '--src-type', at.src.type);
    if (at.dst) a.push(...(at.dst.negate ? ['!'] : []), '--dst-type', at.dst.type);
  }
  for (const s of m.sets ?? []) {
    a.push('-m', 'set');
    if (s.negate) a.push('!');
    a.push('--match-set', s.set, s.dirs);
  }
  if (m.ctstate && m.ctstate.length > 0) a.push('-m', 'conntrack', '--ctstate', m.ctstate.join(','));
  if (rule.action.kind === 'log') {
    a.push('-m', 'hashlimit', '--hashlimit-upto', `${DROP_LOG.ratePerSecond}/sec`, '--hashlimit-burst', `${DROP_LOG.burst}`, '--hashlimit-name', DROP_LOG.limitName);
  }
  a.push('-m', 'comment', '--comment', sanitizeComment(`${ruleId(rule)} ${rule.comment}`));
  switch (rule.action.kind) {
    case 'return':
      a.push('-j', 'RETURN');
      break;
    case 'drop':
      a.push('-j', 'DROP');
      break;
    case 'jump':
      a.push('-j', rule.action.chain);
      break;
    case 'goto':
    case 'logdrop':
      a.push('-g', rule.action.chain);
      break;
    case 'log':
      if (!/^[\x20-\x7e]+$/.test(rule.action.prefix) || /["\\]/.test(rule.action.prefix)) throw new Error(`rule "${rule.comment}": log prefix "${rule.action.prefix}" is not printable ASCII without quotes`);
      a.push('-j', 'NFLOG', '--nflog-prefix', rule.action.prefix, '--nflog-group', `${DROP_LOG.group}`, '--nflog-size', `${DROP_LOG.copyBytes}`);
      break;
    case 'remember':
      // As iptables-nft-save prints it back (libxt_SET revision 3).
      a.push('-j', 'SET', '--add-set', rule.action.set, 'src,dst,dst', '--exist', '--timeout', `${rule.action.timeout}`);
      break;
  }
  return a;
}

/** One restore line; the comment is quoted as iptables-save quotes it. */
export function renderRule(chain: string, rule: Rule): string {
  const args = renderRuleArgs(rule);
  const i = args.indexOf('--comment');
  const p = args.indexOf('--nflog-prefix');
  const parts = args.map((x, j) => ((j === i + 1 && i >= 0) || (j === p + 1 && p >= 0) ? `"${x}"` : x));
  return `-A ${chain} ${parts.join(' ')}`;
}

export function renderHook(h: Hook): string {
  return `-I ${h.chain} 1 -m comment --comment "${sanitizeComment(h.comment)}" -j ${h.target}`;
}

export function renderChainBody(c: Chain): string[] {
  return c.rules.map((r) => renderRule(c.name, r));
}

/**
 * The whole filter-table payload for `iptables-restore --noflush`: declaring a chain (`:NAME`)
 * creates it or flushes it, so our chains are rewritten whole and nothing else is touched;
 * hooks are inserted at position 1.
 */
export function renderIptablesRestore(rs: Pick<Ruleset, 'chains' | 'hooks'>): string {
  const lines: string[] = ['*filter'];
  for (const c of rs.chains) lines.push(`:${c.name} - [0:0]`);
  for (const c of rs.chains) append(lines, renderChainBody(c));
  for (const h of rs.hooks) lines.push(renderHook(h));
  lines.push('COMMIT');
  return lines.join('\n') + '\n';
}
