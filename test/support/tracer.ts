// A packet tracer that executes `iptables-restore` and `ipset restore` TEXT the way the kernel
// would, so property tests can check compile(model) against the reference semantics
// (docs/design.md, invariant two-statements).
//
// It deliberately imports nothing from src/compiler: it reads the rendered text, so a renderer
// bug (a wrong flag, a missing match, a bad port range) shows up here instead of being shared
// by both sides of the comparison.
//
// Fidelity rules, in order of importance:
// 1. Never silently ignore. An option, match, target or set entry this file does not model is an
//    Error naming the line, never skipped: a tracer that drops a match says "allowed" wrongly.
// 2. Refuse what the real tools refuse (too many multiport slots, `-m tcp` without `-p tcp`,
//    a /0 in hash:net, a duplicate `add`, a chain name over 28 characters ...), so text the
//    kernel would reject cannot pass here.
// 3. Evaluate as netfilter does: rules in order, jump pushes, goto replaces, RETURN or the end
//    of a user chain pops, the built-in chain's policy decides when nothing else did.
//
// Facts checked against the iptables and kernel sources are noted where they are used.

// ─── addresses ──────────────────────────────────────────────────────────────────────────────

/** Dotted-quad IPv4 to an unsigned 32-bit number; undefined for anything else. */
export function parseIPv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0;
  for (const p of parts) {
    // Plain decimal only: iptables-save and ipset save never print other forms, and a renderer
    // that emits leading zeros or hex should be told, not second-guessed.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    v = v * 256 + n;
  }
  return v >>> 0;
}

export function formatIPv4(v: number): string {
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
}

function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

function inNet(ip: number, net: number, prefix: number): boolean {
  return ((ip & prefixMask(prefix)) >>> 0) === net;
}

interface Net {
  readonly net: number;
  readonly prefix: number;
}

/** `a.b.c.d` (= /32) or `a.b.c.d/N`; host bits are masked off as iptables and ipset do. */
function parseNet(text: string): Net | undefined {
  const slash = text.indexOf('/');
  const ipText = slash < 0 ? text : text.slice(0, slash);
  const ip = parseIPv4(ipText);
  if (ip === undefined) return undefined;
  let prefix = 32;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]?)$/.test(p)) return undefined;
    prefix = Number(p);
    if (prefix > 32) return undefined;
  }
  return { net: (ip & prefixMask(prefix)) >>> 0, prefix };
}

/**
 * The address of `-s` / `-d`: `a.b.c.d` (= /32), `a.b.c.d/N`, or `a.b.c.d/m.m.m.m` with any
 * dotted mask, contiguous or not, as libxtables' parse_ipmask accepts (xtables_numeric_to_ipmask,
 * then a prefix length); the address is ANDed with the mask. The kernel (legacy: the ipt_ip
 * smsk/dmsk; nft: `ip saddr & mask == addr`) compares (packet & mask) == addr.
 */
function parseAddrMask(text: string): { readonly net: number; readonly mask: number } | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) {
    const ip = parseIPv4(text);
    return ip === undefined ? undefined : { net: ip, mask: 0xffffffff };
  }
  const maskText = text.slice(slash + 1);
  if (!maskText.includes('.')) {
    const n = parseNet(text);
    return n && { net: n.net, mask: prefixMask(n.prefix) };
  }
  const ip = parseIPv4(text.slice(0, slash));
  const mask = parseIPv4(maskText);
  if (ip === undefined || mask === undefined) return undefined;
  return { net: (ip & mask) >>> 0, mask };
}

function formatNet(n: Net): string {
  return `${formatIPv4(n.net)}/${n.prefix}`;
}

/** xtables_strtoui with base 0: `0x..` hex, leading `0` octal, else decimal. */
function parseUint32(text: string): number | undefined {
  let v: number;
  if (/^0[xX][0-9a-fA-F]+$/.test(text)) v = Number.parseInt(text.slice(2), 16);
  else if (/^0[0-7]*$/.test(text)) v = text.length > 1 ? Number.parseInt(text.slice(1), 8) : 0;
  else if (/^[1-9][0-9]*$/.test(text)) v = Number(text);
  else return undefined;
  return v <= 0xffffffff ? v : undefined;
}

// ─── shared vocabulary ──────────────────────────────────────────────────────────────────────

export type L4 = 'tcp' | 'udp' | 'sctp';
export type PacketProtocol = L4 | 'icmp';
export type CtState = 'NEW' | 'ESTABLISHED' | 'RELATED' | 'INVALID';
export type Hook = 'FORWARD' | 'INPUT' | 'OUTPUT';
/** The TCP flags libxt_tcp names (`--tcp-flags`; ALL and NONE are shorthands). */
export type TcpFlag = 'FIN' | 'SYN' | 'RST' | 'PSH' | 'ACK' | 'URG';

export interface Packet {
  readonly src: string;
  readonly dst: string;
  readonly protocol: PacketProtocol;
  /** Required when a rule or set looks at it (tcp/udp/sctp only). */
  readonly dport?: number;
  readonly sport?: number;
  /** Default NEW. */
  readonly ctstate?: CtState;
  /**
   * TCP only: the flags set. Default: a connection's first packet for a NEW one (`['SYN']`), an
   * acknowledgement otherwise (`['ACK']`), so a packet that says nothing means what it always
   * meant. A NEW packet without SYN is a mid-stream pickup (conntrack's loose TCP tracking).
   */
  readonly tcpFlags?: readonly TcpFlag[];
  readonly inIface?: string;
  readonly outIface?: string;
  /** Default 0. */
  readonly mark?: number;
}

export interface PortRange {
  readonly from: number;
  /** Inclusive. */
  readonly to: number;
}

/** Error carrying the 1-based line of the restore text it is about. */
export class RestoreError extends Error {
  readonly line: number;
  constructor(kind: 'iptables-restore' | 'ipset restore', line: number, message: string, lineText?: string) {
    super(`${kind}: line ${line}: ${message}${lineText !== undefined ? `\n  ${lineText}` : ''}`);
    this.line = line;
  }
}

// ─── iptables model ─────────────────────────────────────────────────────────────────────────

export interface AddrMatch {
  readonly net: number;
  /** Any 32-bit mask: a prefix (`/24` = 255.255.255.0) or a dotted one, contiguous or not. */
  readonly mask: number;
  readonly negate: boolean;
}

export interface IfaceMatch {
  /** A trailing `+` matches every interface with that prefix. */
  readonly name: string;
  readonly negate: boolean;
}

export interface PortCondition {
  readonly range: PortRange;
  readonly negate: boolean;
}

/** `--tcp-flags MASK COMP` (or `--syn`): the packet's flags under the mask equal comp; bits as TCP_FLAG_BITS. */
export interface TcpFlagsCondition {
  readonly mask: number;
  readonly comp: number;
  readonly negate: boolean;
}

export type MatchClause =
  | { readonly kind: 'l4'; readonly proto: L4; readonly dport?: PortCondition; readonly sport?: PortCondition; readonly flags?: TcpFlagsCondition }
  | {
      readonly kind: 'multiport';
      readonly which: 'dports' | 'sports' | 'ports';
      readonly ranges: readonly PortRange[];
      readonly negate: boolean;
    }
  | { readonly kind: 'set'; readonly set: string; readonly dirs: readonly ('src' | 'dst')[]; readonly negate: boolean }
  | { readonly kind: 'conntrack'; readonly states: readonly string[]; readonly negate: boolean }
  | { readonly kind: 'comment'; readonly text: string; readonly givenLength: number }
  | { readonly kind: 'mark'; readonly value: number; readonly mask: number; readonly negate: boolean }
  /**
   * A rate limit. A trace follows one packet, and a limit only decides whether a rule that
   * goes on anyway (a log) runs, so it is taken as within its rate: it matches.
   */
  | { readonly kind: 'hashlimit'; readonly name: string }
  /**
   * `-m addrtype` (revision 1): the source's and the destination's type in the node's routes,
   * each side given or not. Only LOCAL is modelled (TraceOptions.local says which addresses are
   * the node's); the parser refuses every other type.
   */
  | { readonly kind: 'addrtype'; readonly src?: AddrTypeCondition; readonly dst?: AddrTypeCondition };

/** One side of `-m addrtype`: the address's type is one of `types` (`negate`: none of them). */
export interface AddrTypeCondition {
  readonly types: readonly AddrType[];
  readonly negate: boolean;
}

/** The address types the tracer can decide (libxt_addrtype knows more; the parser refuses them). */
export type AddrType = 'LOCAL';

export type Target =
  | { readonly kind: 'ACCEPT' | 'DROP' | 'REJECT' | 'RETURN' | 'LOG' | 'MASQUERADE' }
  /** Non-terminating: the packet goes to an NFLOG group with a prefix, evaluation continues. */
  | { readonly kind: 'NFLOG'; readonly group: number; readonly prefix: string }
  | { readonly kind: 'jump' | 'goto'; readonly chain: string; readonly declaredBefore: boolean }
  /** xt_MARK revision 2: mark = (mark & ~mask) ^ value; every MARK option reduces to this. */
  | { readonly kind: 'MARK'; readonly value: number; readonly mask: number }
  /**
   * Non-terminating: xt_SET revision 3 adds the packet's element (the directions as in `-m set`)
   * to a set, or deletes it; evaluation continues. The trace changes `ipsets` only when asked
   * (TraceOptions.setTargets); otherwise the rule is walked and nothing else happens.
   */
  | { readonly kind: 'SET'; readonly op: 'add' | 'del'; readonly set: string; readonly dirs: readonly ('src' | 'dst')[]; readonly exist: boolean; readonly timeout?: number };

export interface ParsedRule {
  /** The line as written (without counters), for traces and failure messages. */
  readonly text: string;
  /** 1-based line in the restore text it came from. */
  readonly line: number;
  readonly src?: AddrMatch;
  readonly dst?: AddrMatch;
  readonly protocol?: { readonly name: PacketProtocol; readonly negate: boolean };
  readonly inIface?: IfaceMatch;
  readonly outIface?: IfaceMatch;
  /** In the order given; all must match. */
  readonly matches: readonly MatchClause[];
  /** Absent: the rule only counts and evaluation continues. */
  readonly target?: Target;
}

export interface ChainState {
  readonly name: string;
  readonly builtin: boolean;
  /** Built-in chains only. */
  policy?: 'ACCEPT' | 'DROP';
  rules: ParsedRule[];
}

export interface TableState {
  readonly name: string;
  readonly chains: Map<string, ChainState>;
}

/** Every table a restore text (or several, applied in turn) left behind, by name. */
export interface Table {
  readonly tables: Map<string, TableState>;
}

const BUILTIN_CHAINS: Record<string, readonly string[]> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  raw: ['PREROUTING', 'OUTPUT'],
  security: ['INPUT', 'FORWARD', 'OUTPUT'],
};

/** Target names iptables resolves to an extension rather than a chain. */
const EXTENSION_TARGETS = new Set(['ACCEPT', 'DROP', 'REJECT', 'RETURN', 'QUEUE', 'LOG', 'NFLOG', 'MARK', 'MASQUERADE', 'SET']);

/** xt_NFLOG's prefix field: 64 bytes with the terminating NUL. */
export const NFLOG_PREFIX_MAX = 63;

/** iptables: chain names must be under XT_EXTENSION_MAXNAMELEN (29) characters. */
export const MAX_CHAIN_NAME = 28;
/** xt_comment keeps XT_MAX_COMMENT_LEN - 1 = 255 characters and silently cuts the rest. */
export const KERNEL_COMMENT_MAX = 255;
/** XT_MULTI_PORTS: a multiport match holds 15 port slots; a range takes two. */
export const MULTIPORT_SLOTS = 15;

function newTable(name: string): TableState {
  const chains = new Map<string, ChainState>();
  for (const c of BUILTIN_CHAINS[name] ?? []) chains.set(c, { name: c, builtin: true, policy: 'ACCEPT', rules: [] });
  return { name, chains };
}

function cloneTable(t: Table): Table {
  const tables = new Map<string, TableState>();
  for (const [name, ts] of t.tables) {
    const chains = new Map<string, ChainState>();
    for (const [cn, c] of ts.chains) chains.set(cn, { ...c, rules: [...c.rules] });
    tables.set(name, { name, chains });
  }
  return { tables };
}

// ─── tokenizer ──────────────────────────────────────────────────────────────────────────────

/**
 * Splits one restore line into arguments exactly as iptables' add_param_to_argv does: blanks
 * separate, `"` opens a quoted part in which `\x` stands for x, and a closing quote ends the
 * argument (so `""` is an empty argument and `"a"b` is two). Single quotes are not special.
 */
export function tokenizeRestoreLine(text: string, line = 0): string[] {
  const out: string[] = [];
  let cur = '';
  let quoteOpen = false;
  let escaped = false;
  for (const ch of text) {
    if (quoteOpen) {
      if (escaped) {
        cur += ch;
        escaped = false;
      } else if (ch === '\\') {
        escaped = true;
      } else if (ch === '"') {
        quoteOpen = false;
        out.push(cur);
        cur = '';
      } else {
        cur += ch;
      }
      continue;
    }
    if (ch === '"') {
      quoteOpen = true;
    } else if (ch === ' ' || ch === '\t' || ch === '\n') {
      if (cur.length > 0) out.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (quoteOpen) throw new RestoreError('iptables-restore', line, 'unterminated quote', text);
  if (cur.length > 0) out.push(cur);
  return out;
}

// ─── rule argument parser ───────────────────────────────────────────────────────────────────

/** Throws; the message says what failed and the value received. */
export type Fail = (message: string) => never;

const throwError: Fail = (message) => {
  throw new Error(message);
};

interface OptionSpec {
  /** How many arguments follow the option. */
  readonly values: number;
  readonly invertible: boolean;
}

/** A loaded match or target: the options it accepts and what it has received so far. */
interface Extension {
  readonly name: string;
  readonly options: Record<string, OptionSpec>;
  /** iptables marks an instance completed once another `-m` of the same name is loaded. */
  completed: boolean;
  readonly seen: Map<string, { values: string[]; negate: boolean }>;
}

const MATCH_OPTIONS: Record<string, Record<string, OptionSpec>> = {
  // Long aliases of the same option share one entry in `seen` (see canonicalOption).
  tcp: {
    '--dport': { values: 1, invertible: true },
    '--sport': { values: 1, invertible: true },
    '--tcp-flags': { values: 2, invertible: true },
    '--syn': { values: 0, invertible: true },
  },
  udp: {
    '--dport': { values: 1, invertible: true },
    '--sport': { values: 1, invertible: true },
  },
  sctp: {
    '--dport': { values: 1, invertible: true },
    '--sport': { values: 1, invertible: true },
  },
  multiport: {
    '--dports': { values: 1, invertible: true },
    '--sports': { values: 1, invertible: true },
    '--ports': { values: 1, invertible: true },
  },
  set: { '--match-set': { values: 2, invertible: true } },
  conntrack: { '--ctstate': { values: 1, invertible: true } },
  state: { '--state': { values: 1, invertible: true } },
  comment: { '--comment': { values: 1, invertible: false } },
  mark: { '--mark': { values: 1, invertible: true } },
  // libxt_addrtype revision 1; --limit-iface-in / --limit-iface-out are not modelled (unknown here).
  addrtype: {
    '--src-type': { values: 1, invertible: true },
    '--dst-type': { values: 1, invertible: true },
  },
  hashlimit: {
    '--hashlimit-upto': { values: 1, invertible: false },
    '--hashlimit-above': { values: 1, invertible: false },
    '--hashlimit-burst': { values: 1, invertible: false },
    '--hashlimit-name': { values: 1, invertible: false },
    '--hashlimit-mode': { values: 1, invertible: false },
  },
};

const TARGET_OPTIONS: Record<string, Record<string, OptionSpec>> = {
  REJECT: { '--reject-with': { values: 1, invertible: false } },
  SET: {
    '--add-set': { values: 2, invertible: false },
    '--del-set': { values: 2, invertible: false },
    '--exist': { values: 0, invertible: false },
    '--timeout': { values: 1, invertible: false },
  },
  NFLOG: {
    '--nflog-group': { values: 1, invertible: false },
    '--nflog-prefix': { values: 1, invertible: false },
    '--nflog-size': { values: 1, invertible: false },
    '--nflog-range': { values: 1, invertible: false },
    '--nflog-threshold': { values: 1, invertible: false },
  },
  LOG: {
    '--log-prefix': { values: 1, invertible: false },
    '--log-level': { values: 1, invertible: false },
    '--log-tcp-sequence': { values: 0, invertible: false },
    '--log-tcp-options': { values: 0, invertible: false },
    '--log-ip-options': { values: 0, invertible: false },
    '--log-uid': { values: 0, invertible: false },
  },
  MARK: {
    '--set-xmark': { values: 1, invertible: false },
    '--set-mark': { values: 1, invertible: false },
    '--and-mark': { values: 1, invertible: false },
    '--or-mark': { values: 1, invertible: false },
    '--xor-mark': { values: 1, invertible: false },
  },
  MASQUERADE: {
    '--to-ports': { values: 1, invertible: false },
    '--random': { values: 0, invertible: false },
    '--random-fully': { values: 0, invertible: false },
  },
};

const OPTION_ALIASES: Record<string, string> = {
  '--destination-port': '--dport',
  '--source-port': '--sport',
  '--destination-ports': '--dports',
  '--source-ports': '--sports',
};

function canonicalOption(opt: string): string {
  return OPTION_ALIASES[opt] ?? opt;
}

const PROTOCOLS: Record<string, PacketProtocol | 'all'> = {
  tcp: 'tcp',
  '6': 'tcp',
  udp: 'udp',
  '17': 'udp',
  sctp: 'sctp',
  '132': 'sctp',
  icmp: 'icmp',
  '1': 'icmp',
  all: 'all',
  '0': 'all',
};

/** libxt_addrtype's type names (the kernel's RTN_* route types). */
const ADDRTYPE_NAMES = new Set(['UNSPEC', 'UNICAST', 'LOCAL', 'BROADCAST', 'ANYCAST', 'MULTICAST', 'BLACKHOLE', 'UNREACHABLE', 'PROHIBIT', 'THROW', 'NAT', 'XRESOLVE']);

const CT_STATES = new Set(['NEW', 'ESTABLISHED', 'RELATED', 'INVALID', 'UNTRACKED', 'SNAT', 'DNAT']);

function parsePort(text: string, fail: Fail): number {
  // Plain decimal only: service names depend on /etc/services, and xtables reads a leading 0 as
  // octal (`010` is port 8), so neither has a place in rendered rules.
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text) || Number(text) > 65535) fail(`invalid port "${text}"`);
  return Number(text);
}

/** libxt_tcp/udp/sctp: `N`, `N:M`, `:M` (0:M), `N:` (N:65535); min > max is an error. */
function parseL4PortRange(text: string, fail: Fail): PortRange {
  const colon = text.indexOf(':');
  if (colon < 0) {
    const p = parsePort(text, fail);
    return { from: p, to: p };
  }
  const a = text.slice(0, colon);
  const b = text.slice(colon + 1);
  const from = a === '' ? 0 : parsePort(a, fail);
  const to = b === '' ? 65535 : parsePort(b, fail);
  if (from > to) fail(`invalid port range "${text}" (min > max)`);
  return { from, to };
}

/** libxt_multiport v1: at most 15 slots, a range takes 2 and needs min < max (strictly). */
function parseMultiport(text: string, fail: Fail): PortRange[] {
  const out: PortRange[] = [];
  let slots = 0;
  for (const part of text.split(',')) {
    const colon = part.indexOf(':');
    if (colon < 0) {
      const p = parsePort(part, fail);
      out.push({ from: p, to: p });
      slots += 1;
    } else {
      const from = parsePort(part.slice(0, colon), fail);
      const to = parsePort(part.slice(colon + 1), fail);
      if (from >= to) fail(`multiport: invalid port range "${part}" (needs min < max)`);
      out.push({ from, to });
      slots += 2;
    }
    if (slots > MULTIPORT_SLOTS) fail(`multiport: too many ports in "${text}" (${MULTIPORT_SLOTS} slots, a range takes 2)`);
  }
  return out;
}

/** The TCP header's flag bits (libxt_tcp tcp_flag_names; the kernel's tcp_flag_word). */
const TCP_FLAG_BITS: Record<TcpFlag, number> = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20 };

/** libxt_tcp parse_tcp_flag: a comma-separated list of names (any case), ALL and NONE included. */
function parseTcpFlagList(text: string, fail: Fail): number {
  let bits = 0;
  for (const name of text.split(',')) {
    const n = name.toUpperCase();
    if (n === 'ALL') bits |= 0x3f;
    else if (n === 'NONE') continue;
    else if (n in TCP_FLAG_BITS) bits |= TCP_FLAG_BITS[n as TcpFlag];
    else fail(`--tcp-flags: unknown TCP flag "${name}"`);
  }
  return bits;
}

function parseMarkMask(text: string, fail: Fail): { value: number; mask?: number } {
  const [v, m, extra] = text.split('/');
  const value = parseUint32(v ?? '');
  if (value === undefined || extra !== undefined) fail(`invalid mark "${text}"`);
  if (m === undefined) return { value };
  const mask = parseUint32(m);
  if (mask === undefined) fail(`invalid mark mask "${text}"`);
  return { value, mask };
}

function validateChainName(name: string, fail: Fail): void {
  if (name.length > MAX_CHAIN_NAME) fail(`chain name "${name}" is ${name.length} characters (max ${MAX_CHAIN_NAME})`);
  if (name.length === 0 || name.startsWith('-') || name.startsWith('!')) fail(`invalid chain name "${name}"`);
  if (EXTENSION_TARGETS.has(name)) fail(`chain name "${name}" clashes with a target name`);
}

interface RuleContext {
  readonly table: TableState;
  readonly chain: string;
  readonly fail: Fail;
}

/** Parses everything after `-A CHAIN` into a structured rule. */
function parseRuleArgs(args: readonly string[], text: string, line: number, ctx: RuleContext): ParsedRule {
  // Annotated so that TypeScript narrows after `fail(...)` calls (it returns never).
  const fail: Fail = ctx.fail;
  let src: AddrMatch | undefined;
  let dst: AddrMatch | undefined;
  let protocol: { name: PacketProtocol | 'all'; negate: boolean } | undefined;
  let inIface: IfaceMatch | undefined;
  let outIface: IfaceMatch | undefined;
  let targetName: string | undefined;
  let isGoto = false;
  let targetExt: Extension | undefined;
  let implicitProtoLoaded = false;
  const loaded: Extension[] = [];
  let negate = false;

  const take = (i: number, n: number, opt: string): string[] => {
    const values = args.slice(i + 1, i + 1 + n);
    if (values.length < n) fail(`option ${opt} needs ${n} argument(s)`);
    return values;
  };
  const once = (present: unknown, opt: string): void => {
    if (present !== undefined) fail(`multiple ${opt} options not allowed`);
  };
  const loadMatch = (name: string): Extension => {
    const options = MATCH_OPTIONS[name];
    if (!options) fail(`unsupported match "-m ${name}"`);
    for (const e of loaded) if (e.name === name) e.completed = true;
    const ext: Extension = { name, options, completed: false, seen: new Map() };
    loaded.push(ext);
    return ext;
  };

  for (let i = 0; i < args.length; i++) {
    const tok = args[i]!;
    if (tok === '!') {
      if (negate) fail('multiple consecutive "!" not allowed');
      negate = true;
      continue;
    }
    const wasNegated = negate;
    negate = false;
    switch (tok) {
      case '-s':
      case '--source':
      case '-d':
      case '--destination': {
        const [v] = take(i, 1, tok);
        i += 1;
        const n = parseAddrMask(v!);
        if (!n) fail(`${tok}: unsupported address "${v}" (expected a.b.c.d, a.b.c.d/N or a.b.c.d/m.m.m.m)`);
        const m: AddrMatch = { ...n, negate: wasNegated };
        if (tok === '-s' || tok === '--source') {
          once(src, '-s');
          src = m;
        } else {
          once(dst, '-d');
          dst = m;
        }
        break;
      }
      case '-p':
      case '--protocol': {
        const [v] = take(i, 1, tok);
        i += 1;
        once(protocol, '-p');
        const p = PROTOCOLS[v!.toLowerCase()];
        if (!p) fail(`-p: unsupported protocol "${v}"`);
        // iptables: "rule would never match protocol".
        if (p === 'all' && wasNegated) fail('"! -p all" would never match');
        protocol = { name: p, negate: wasNegated };
        break;
      }
      case '-i':
      case '--in-interface':
      case '-o':
      case '--out-interface': {
        const [v] = take(i, 1, tok);
        i += 1;
        if (!/^[^\s/]{1,15}$/.test(v!)) fail(`${tok}: invalid interface name "${v}"`);
        const m: IfaceMatch = { name: v!, negate: wasNegated };
        if (tok === '-i' || tok === '--in-interface') {
          once(inIface, '-i');
          inIface = m;
        } else {
          once(outIface, '-o');
          outIface = m;
        }
        break;
      }
      case '-m':
      case '--match': {
        if (wasNegated) fail('unexpected "!" before -m');
        const [v] = take(i, 1, tok);
        i += 1;
        loadMatch(v!);
        break;
      }
      case '-j':
      case '--jump':
      case '-g':
      case '--goto': {
        if (wasNegated) fail(`unexpected "!" before ${tok}`);
        const [v] = take(i, 1, tok);
        i += 1;
        if (targetName !== undefined) fail('multiple -j/-g options not allowed');
        targetName = v!;
        isGoto = tok === '-g' || tok === '--goto';
        if (isGoto && EXTENSION_TARGETS.has(targetName)) fail(`goto "${targetName}" is not a chain`);
        if (targetName === 'QUEUE') fail('unsupported target QUEUE');
        const topts = TARGET_OPTIONS[targetName];
        if (topts) targetExt = { name: targetName, options: topts, completed: false, seen: new Map() };
        break;
      }
      default: {
        if (!tok.startsWith('--')) fail(`unexpected argument "${tok}"`);
        const opt = canonicalOption(tok);
        // iptables offers an option to the target first, then to the open matches in load order,
        // then tries loading the match named after -p (`-p tcp --dport 80` without `-m tcp`).
        let ext: Extension | undefined;
        if (targetExt && opt in targetExt.options) ext = targetExt;
        ext ??= loaded.find((e) => !e.completed && opt in e.options);
        if (
          !ext &&
          !implicitProtoLoaded &&
          protocol &&
          !protocol.negate &&
          (protocol.name === 'tcp' || protocol.name === 'udp' || protocol.name === 'sctp') &&
          opt in MATCH_OPTIONS[protocol.name]!
        ) {
          implicitProtoLoaded = true;
          ext = loadMatch(protocol.name);
        }
        if (!ext) fail(`unknown option "${tok}"`);
        const spec = ext.options[opt]!;
        if (wasNegated && !spec.invertible) fail(`option ${tok} cannot be negated`);
        if (ext.seen.has(opt)) fail(`multiple ${tok} options not allowed in one -m ${ext.name}`);
        if (ext.name === 'multiport' && (!protocol || protocol.negate || !['tcp', 'udp', 'sctp'].includes(protocol.name))) {
          // libxt_multiport checks the protocol while parsing the option, so -p must come first.
          fail('multiport needs "-p tcp", "-p udp" or "-p sctp" before its ports');
        }
        const values = take(i, spec.values, tok);
        i += spec.values;
        ext.seen.set(opt, { values, negate: wasNegated });
      }
    }
  }
  if (negate) fail('"!" at the end of the rule');

  const matches: MatchClause[] = [];
  for (const e of loaded) matches.push(buildMatch(e, protocol, fail));

  let target: Target | undefined;
  if (targetName !== undefined) target = buildTarget(targetName, isGoto, targetExt, ctx);

  const proto = protocol && protocol.name !== 'all' ? { name: protocol.name, negate: protocol.negate } : undefined;
  return {
    text,
    line,
    ...(src ? { src } : {}),
    ...(dst ? { dst } : {}),
    ...(proto ? { protocol: proto } : {}),
    ...(inIface ? { inIface } : {}),
    ...(outIface ? { outIface } : {}),
    matches,
    ...(target ? { target } : {}),
  };
}

function buildMatch(
  e: Extension,
  protocol: { name: PacketProtocol | 'all'; negate: boolean } | undefined,
  fail: Fail,
): MatchClause {
  const get = (opt: string) => e.seen.get(opt);
  switch (e.name) {
    case 'tcp':
    case 'udp':
    case 'sctp': {
      // The kernel refuses a protocol match whose rule is not for that protocol (xt_check_match:
      // "only valid for protocol N"), including a negated -p.
      if (!protocol || protocol.name !== e.name || protocol.negate) fail(`-m ${e.name} needs "-p ${e.name}"`);
      const d = get('--dport');
      const s = get('--sport');
      // libxt_tcp: `--syn` is `--tcp-flags SYN,RST,ACK,FIN SYN`, and only one of the two is allowed.
      const syn = get('--syn');
      const tf = get('--tcp-flags');
      if (syn && tf) fail('Only one of `--syn\' or `--tcp-flags\' may be specified');
      const flags: TcpFlagsCondition | undefined = syn
        ? { mask: TCP_FLAG_BITS.SYN | TCP_FLAG_BITS.RST | TCP_FLAG_BITS.ACK | TCP_FLAG_BITS.FIN, comp: TCP_FLAG_BITS.SYN, negate: syn.negate }
        : tf
          ? { mask: parseTcpFlagList(tf.values[0]!, fail), comp: parseTcpFlagList(tf.values[1]!, fail), negate: tf.negate }
          : undefined;
      return {
        kind: 'l4',
        proto: e.name,
        ...(d ? { dport: { range: parseL4PortRange(d.values[0]!, fail), negate: d.negate } } : {}),
        ...(s ? { sport: { range: parseL4PortRange(s.values[0]!, fail), negate: s.negate } } : {}),
        ...(flags ? { flags } : {}),
      };
    }
    case 'multiport': {
      const which = (['dports', 'sports', 'ports'] as const).filter((w) => e.seen.has(`--${w}`));
      if (which.length === 0) fail('multiport: no ports specified');
      if (which.length > 1) fail('multiport: only one of --dports, --sports, --ports');
      const o = get(`--${which[0]!}`)!;
      return { kind: 'multiport', which: which[0]!, ranges: parseMultiport(o.values[0]!, fail), negate: o.negate };
    }
    case 'set': {
      const o = get('--match-set');
      if (!o) fail('-m set needs --match-set');
      const [name, dirText] = o.values as [string, string];
      const dirs = dirText.split(',');
      if (dirs.length > 6 || dirs.some((d) => d !== 'src' && d !== 'dst')) fail(`--match-set: invalid directions "${dirText}"`);
      return { kind: 'set', set: name, dirs: dirs as ('src' | 'dst')[], negate: o.negate };
    }
    case 'conntrack':
    case 'state': {
      const o = get(e.name === 'state' ? '--state' : '--ctstate');
      if (!o) fail(`-m ${e.name}: at least one option is required`);
      const states = o.values[0]!.split(',');
      for (const s of states) if (!CT_STATES.has(s)) fail(`-m ${e.name}: unknown state "${s}"`);
      return { kind: 'conntrack', states, negate: o.negate };
    }
    case 'comment': {
      const o = get('--comment');
      if (!o) fail('-m comment needs --comment');
      const given = o.values[0]!;
      // xtopt_parse_string cuts the string to the field size without an error; keep what the
      // kernel keeps and remember the length given so checkReferences can flag the mismatch.
      return { kind: 'comment', text: given.slice(0, KERNEL_COMMENT_MAX), givenLength: given.length };
    }
    case 'mark': {
      const o = get('--mark');
      if (!o) fail('-m mark needs --mark');
      const { value, mask } = parseMarkMask(o.values[0]!, fail);
      return { kind: 'mark', value, mask: mask ?? 0xffffffff, negate: o.negate };
    }
    case 'addrtype': {
      // libxt_addrtype addrtype_check: "you must specify --src-type or --dst-type".
      const side = (opt: '--src-type' | '--dst-type'): AddrTypeCondition | undefined => {
        const o = get(opt);
        if (!o) return undefined;
        const types = o.values[0]!.split(',').map((t) => {
          // libxt_addrtype parse_type: the rtn type names, any case; an unknown name is an error.
          const u = t.toUpperCase();
          if (!ADDRTYPE_NAMES.has(u)) fail(`-m addrtype: unknown address type "${t}"`);
          if (u !== 'LOCAL') fail(`-m addrtype: address type ${u} is not modelled (only LOCAL: TraceOptions.local)`);
          return u as AddrType;
        });
        return { types, negate: o.negate };
      };
      const src = side('--src-type');
      const dst = side('--dst-type');
      if (!src && !dst) fail('-m addrtype: you must specify --src-type or --dst-type');
      return { kind: 'addrtype', ...(src ? { src } : {}), ...(dst ? { dst } : {}) };
    }
    case 'hashlimit': {
      // libxt_hashlimit: a name and a rate (--hashlimit-upto or --hashlimit-above) are required.
      const name = get('--hashlimit-name');
      if (!name) fail('-m hashlimit needs --hashlimit-name');
      const rate = get('--hashlimit-upto') ?? get('--hashlimit-above');
      if (!rate) fail('-m hashlimit needs --hashlimit-upto or --hashlimit-above');
      if (!/^[1-9][0-9]*\/(sec|second|min|minute|hour|day)$/.test(rate.values[0]!)) fail(`-m hashlimit: bad rate "${rate.values[0]}"`);
      const burst = get('--hashlimit-burst');
      if (burst && !/^[1-9][0-9]*$/.test(burst.values[0]!)) fail(`-m hashlimit: bad burst "${burst.values[0]}"`);
      if (name.values[0]!.length > 31) fail(`-m hashlimit: name "${name.values[0]}" longer than 31 characters`);
      return { kind: 'hashlimit', name: name.values[0]! };
    }
    default:
      return fail(`unsupported match "-m ${e.name}"`);
  }
}

function buildTarget(name: string, isGoto: boolean, ext: Extension | undefined, ctx: RuleContext): Target {
  const fail: Fail = ctx.fail;
  const table = ctx.table;
  switch (name) {
    case 'ACCEPT':
    case 'DROP':
    case 'RETURN':
    case 'LOG':
      return { kind: name };
    case 'NFLOG': {
      const g = ext?.seen.get('--nflog-group')?.values[0] ?? '0';
      const group = Number(g);
      if (!/^[0-9]+$/.test(g) || group > 65535) fail(`NFLOG: bad --nflog-group "${g}"`);
      const prefix = ext?.seen.get('--nflog-prefix')?.values[0] ?? '';
      if (prefix.length > NFLOG_PREFIX_MAX) fail(`NFLOG: --nflog-prefix "${prefix}" is longer than ${NFLOG_PREFIX_MAX} characters`);
      return { kind: 'NFLOG', group, prefix };
    }
    case 'REJECT':
      if (table.name !== 'filter') fail('REJECT is only valid in the filter table');
      return { kind: 'REJECT' };
    case 'MASQUERADE':
      if (table.name !== 'nat') fail('MASQUERADE is only valid in the nat table');
      return { kind: 'MASQUERADE' };
    case 'SET': {
      const add = ext?.seen.get('--add-set');
      const del = ext?.seen.get('--del-set');
      if (!add === !del) fail('SET needs exactly one of --add-set and --del-set (this tracer models one)');
      const [setName, dirText] = (add ?? del)!.values as [string, string];
      const dirs = dirText.split(',');
      if (dirs.length > 6 || dirs.some((d) => d !== 'src' && d !== 'dst')) fail(`SET: invalid directions "${dirText}"`);
      const t = ext?.seen.get('--timeout')?.values[0];
      if (t !== undefined && !/^[0-9]+$/.test(t)) fail(`SET: bad --timeout "${t}"`);
      if (t !== undefined && !add) fail('SET: --timeout only with --add-set');
      return { kind: 'SET', op: add ? 'add' : 'del', set: setName, dirs: dirs as ('src' | 'dst')[], exist: ext!.seen.has('--exist'), ...(t !== undefined && { timeout: Number(t) }) };
    }
    case 'MARK': {
      const set = [...ext!.seen.entries()];
      if (set.length !== 1) fail('MARK needs exactly one of --set-xmark, --set-mark, --and-mark, --or-mark, --xor-mark');
      const [opt, { values }] = set[0]!;
      const { value, mask } = parseMarkMask(values[0]!, fail);
      // libxt_MARK rev 2 turns every form into (value, mask) for xt_MARK: mark = (mark & ~mask) ^ value.
      switch (opt) {
        case '--set-xmark':
          return { kind: 'MARK', value, mask: mask ?? 0xffffffff };
        case '--set-mark':
          return { kind: 'MARK', value, mask: ((mask ?? 0xffffffff) | value) >>> 0 };
        default:
          if (mask !== undefined) fail(`${opt} takes no mask`);
          if (opt === '--and-mark') return { kind: 'MARK', value: 0, mask: ~value >>> 0 };
          if (opt === '--or-mark') return { kind: 'MARK', value, mask: value };
          return { kind: 'MARK', value, mask: 0 };
      }
    }
    default: {
      validateChainName(name, fail);
      const c = table.chains.get(name);
      if (c?.builtin) fail(`cannot jump to built-in chain ${name}`);
      // A chain declared later in the same restore is not there yet when iptables-restore
      // parses this line, and the line fails; checkReferences reports it.
      return { kind: isGoto ? 'goto' : 'jump', chain: name, declaredBefore: c !== undefined };
    }
  }
}

/** Structural identity of a rule, for `-D CHAIN rule-spec` (iptables compares the entry). */
function ruleKey(r: ParsedRule): string {
  const { text: _t, line: _l, target, ...rest } = r;
  const t = target && (target.kind === 'jump' || target.kind === 'goto') ? { kind: target.kind, chain: target.chain } : target;
  return JSON.stringify({ ...rest, target: t });
}

// ─── iptables-restore ───────────────────────────────────────────────────────────────────────

export interface IptablesRestoreOptions {
  /** State to apply the text to (not modified); default: nothing, every table empty. */
  readonly base?: Table;
  /**
   * `iptables-restore --noflush`: tables are not flushed at `*table`; a `:CHAIN` line creates
   * the chain or flushes it if it exists. Without it, each table named is replaced whole.
   */
  readonly noflush?: boolean;
}

/**
 * Parses (applies) `iptables-restore` text. Each `*table` ... `COMMIT` block is kept by name.
 * Errors are RestoreError with the line number; like iptables-restore, nothing is returned
 * for a text with an error in it.
 */
export function parseIptablesRestore(text: string, opts: IptablesRestoreOptions = {}): Table {
  const state = opts.base ? cloneTable(opts.base) : { tables: new Map<string, TableState>() };
  let current: TableState | undefined;
  const lines = text.split('\n');
  let lineNo = 0;
  for (const raw of lines) {
    lineNo++;
    const lineText = raw.trim();
    const fail: Fail = (message) => {
      throw new RestoreError('iptables-restore', lineNo, message, lineText);
    };
    if (lineText === '' || lineText.startsWith('#')) continue;
    if (lineText.startsWith('*')) {
      if (current) fail(`table ${current.name} not committed before the next table`);
      const name = lineText.slice(1);
      if (!BUILTIN_CHAINS[name]) fail(`unknown table "${name}"`);
      let t = state.tables.get(name);
      if (!t || !opts.noflush) {
        // Without --noflush the table is flushed and its user chains deleted.
        t = newTable(name);
        for (const [cn, c] of state.tables.get(name)?.chains ?? []) {
          if (c.builtin) t.chains.get(cn)!.policy = c.policy;
        }
        state.tables.set(name, t);
      }
      current = t;
      continue;
    }
    if (!current) fail('rule or declaration outside a *table ... COMMIT block');
    const table = current;
    if (lineText === 'COMMIT') {
      current = undefined;
      continue;
    }
    if (lineText.startsWith(':')) {
      const [name = '', policy, counters, extra] = lineText.slice(1).split(/[ \t]+/);
      if (!policy) fail(`chain declaration without a policy`);
      if (counters !== undefined && !/^\[[0-9]+:[0-9]+\]$/.test(counters)) fail(`invalid counters "${counters}"`);
      if (extra !== undefined) fail(`unexpected "${extra}" in chain declaration`);
      const existing = table.chains.get(name);
      if (existing?.builtin) {
        if (policy !== '-') {
          if (policy !== 'ACCEPT' && policy !== 'DROP') fail(`invalid policy "${policy}" for ${name}`);
          existing.policy = policy;
        }
        continue;
      }
      validateChainName(name, fail);
      if (policy !== '-') fail(`cannot set policy "${policy}" on user chain ${name}`);
      if (existing) {
        // iptables-restore: with --noflush an existing chain is flushed; otherwise the table was
        // just flushed, so the chain exists only because this text declared it twice.
        if (!opts.noflush) fail(`chain ${name} already exists`);
        existing.rules = [];
      } else {
        table.chains.set(name, { name, builtin: false, rules: [] });
      }
      continue;
    }

    // A rule line may carry `[pkts:bytes]` counters in front (iptables-save -c).
    const body = lineText.replace(/^\[[0-9]+:[0-9]+\]\s+/, '');
    const tokens = tokenizeRestoreLine(body, lineNo);
    const cmd = tokens[0]!;
    const chainName = tokens[1];
    const needChain = (): ChainState => {
      if (chainName === undefined) fail(`${cmd} needs a chain`);
      const c = table.chains.get(chainName);
      if (!c) fail(`no chain "${chainName}" in table ${table.name}`);
      return c;
    };
    const ruleOf = (args: readonly string[], chain: string) =>
      parseRuleArgs(args, body, lineNo, { table, chain, fail });
    const ruleNumber = (tok: string | undefined): number => {
      if (tok === undefined || !/^[1-9][0-9]*$/.test(tok)) fail(`invalid rule number "${tok}"`);
      return Number(tok);
    };
    switch (cmd) {
      case '-A':
      case '--append': {
        const c = needChain();
        c.rules.push(ruleOf(tokens.slice(2), c.name));
        break;
      }
      case '-I':
      case '--insert': {
        const c = needChain();
        let args = tokens.slice(2);
        let pos = 1;
        if (args[0] !== undefined && /^[0-9]+$/.test(args[0])) {
          pos = ruleNumber(args[0]);
          args = args.slice(1);
        }
        if (pos > c.rules.length + 1) fail(`index of insertion too big (${pos}, chain ${c.name} has ${c.rules.length} rules)`);
        c.rules.splice(pos - 1, 0, ruleOf(args, c.name));
        break;
      }
      case '-D':
      case '--delete': {
        const c = needChain();
        const args = tokens.slice(2);
        if (args.length === 1 && /^[0-9]+$/.test(args[0]!)) {
          const n = ruleNumber(args[0]);
          if (n > c.rules.length) fail(`no rule ${n} in chain ${c.name}`);
          c.rules.splice(n - 1, 1);
        } else {
          const key = ruleKey(ruleOf(args, c.name));
          const at = c.rules.findIndex((r) => ruleKey(r) === key);
          if (at < 0) fail(`rule to delete does not exist in chain ${c.name}`);
          c.rules.splice(at, 1);
        }
        break;
      }
      case '-R':
      case '--replace': {
        const c = needChain();
        const n = ruleNumber(tokens[2]);
        if (n > c.rules.length) fail(`no rule ${n} in chain ${c.name}`);
        c.rules[n - 1] = ruleOf(tokens.slice(3), c.name);
        break;
      }
      case '-F':
      case '--flush': {
        if (chainName === undefined) for (const c of table.chains.values()) c.rules = [];
        else needChain().rules = [];
        break;
      }
      case '-N':
      case '--new-chain': {
        if (chainName === undefined) fail('-N needs a chain name');
        validateChainName(chainName, fail);
        if (table.chains.has(chainName)) fail(`chain ${chainName} already exists`);
        table.chains.set(chainName, { name: chainName, builtin: false, rules: [] });
        break;
      }
      case '-X':
      case '--delete-chain': {
        const victims =
          chainName === undefined ? [...table.chains.values()].filter((c) => !c.builtin) : [needChain()];
        for (const c of victims) {
          if (c.builtin) fail(`cannot delete built-in chain ${c.name}`);
          if (c.rules.length > 0) fail(`chain ${c.name} is not empty`);
          const users = referencesTo(table, c.name);
          if (users.length > 0) fail(`chain ${c.name} is still referenced (line ${users[0]!.line})`);
          table.chains.delete(c.name);
        }
        break;
      }
      case '-P':
      case '--policy': {
        const c = needChain();
        const policy = tokens[2];
        if (!c.builtin) fail(`cannot set a policy on user chain ${c.name}`);
        if (policy !== 'ACCEPT' && policy !== 'DROP') fail(`invalid policy "${policy}"`);
        c.policy = policy;
        break;
      }
      default:
        fail(`unsupported command "${cmd}"`);
    }
  }
  if (current) {
    throw new RestoreError('iptables-restore', lineNo, `COMMIT expected for table ${current.name} at end of input`);
  }
  return state;
}

function referencesTo(table: TableState, chain: string): ParsedRule[] {
  const out: ParsedRule[] = [];
  for (const c of table.chains.values()) {
    for (const r of c.rules) {
      if ((r.target?.kind === 'jump' || r.target?.kind === 'goto') && r.target.chain === chain) out.push(r);
    }
  }
  return out;
}

// ─── ipset model ────────────────────────────────────────────────────────────────────────────

export type IpsetType = 'hash:ip' | 'hash:net' | 'hash:ip,port' | 'hash:net,net' | 'hash:ip,port,ip';

export interface NetEntry extends Net {
  readonly nomatch: boolean;
}

export interface IpPortEntry {
  readonly ip: number;
  readonly proto: L4;
  readonly port: number;
}

export interface NetNetEntry {
  readonly a: Net;
  readonly b: Net;
  readonly nomatch: boolean;
}

/** hash:ip,port,ip: the first address, a protocol and port, the second address. */
export interface IpPortIpEntry extends IpPortEntry {
  readonly ip2: number;
}

export type IpsetEntry = number | NetEntry | IpPortEntry | NetNetEntry | IpPortIpEntry;

export interface IpsetData {
  readonly name: string;
  readonly type: IpsetType;
  readonly maxelem: number;
  /**
   * Created with `timeout N`: its elements expire N seconds after their add (or their own
   * `timeout`). The tracer keeps no clock: an element stays until deleted, as within the first
   * N seconds. Only such a set takes an element's `timeout`.
   */
  readonly timeout?: number;
  /** Keyed by the normalized element (what the kernel uses as identity). */
  entries: Map<string, IpsetEntry>;
}

export interface IpsetState {
  readonly sets: Map<string, IpsetData>;
}

/** IPSET_MAXNAMELEN is 32 including the NUL. */
export const MAX_SET_NAME = 31;
const IPSET_TYPES = new Set<string>(['hash:ip', 'hash:net', 'hash:ip,port', 'hash:net,net', 'hash:ip,port,ip']);
/** We expand CIDRs in hash:ip and port ranges in hash:ip,port; refuse absurd expansions. */
const MAX_EXPANSION = 65536;

export interface IpsetRestoreOptions {
  /** State to apply the text to (not modified). */
  readonly base?: IpsetState;
  /** `ipset restore -exist`: ignore create of an identical set, add of a present entry, del of an absent one. */
  readonly exist?: boolean;
}

/** A `hash:net` / `hash:net,net` component: the kernel refuses prefix 0 (IPSET_ERR_INVALID_CIDR). */
function parseSetNet(text: string, fail: Fail): Net {
  const n = parseNet(text);
  if (!n) fail(`invalid address "${text}"`);
  if (n.prefix === 0) fail(`"${text}": hash:net cannot hold a /0 (use 0.0.0.0/1 and 128.0.0.0/1)`);
  return n;
}

/** Parses one `add`/`del` element into normalized (key, entry) pairs; CIDR/port ranges expand. */
function parseElement(set: IpsetData, elem: string, nomatch: boolean, fail: Fail): Array<[string, IpsetEntry]> {
  if (nomatch && set.type !== 'hash:net' && set.type !== 'hash:net,net') fail(`${set.type} does not support nomatch`);
  const expandIps = (text: string): number[] => {
    const n = parseNet(text);
    if (!n) fail(`invalid address "${text}"`);
    if (n.prefix === 0) fail(`"${text}": invalid CIDR /0`);
    const count = 2 ** (32 - n.prefix);
    if (count > MAX_EXPANSION) fail(`"${text}" expands to ${count} addresses (tracer limit ${MAX_EXPANSION})`);
    return Array.from({ length: count }, (_, k) => (n.net + k) >>> 0);
  };
  switch (set.type) {
    case 'hash:ip':
      return expandIps(elem).map((ip) => [formatIPv4(ip), ip]);
    case 'hash:net': {
      const n = parseSetNet(elem, fail);
      return [[formatNet(n), { ...n, nomatch }]];
    }
    case 'hash:ip,port,ip': {
      // One element, no ranges (the agent adds single tuples).
      const parts = elem.split(',');
      if (parts.length !== 3) fail(`"${elem}" is not IP,proto:port,IP`);
      const [ip, ip2] = [parts[0]!, parts[2]!].map((t) => {
        const v = parseIPv4(t);
        if (v === undefined) fail(`invalid address "${t}" in "${elem}"`);
        return v;
      });
      const m = /^(tcp|udp|sctp):(\d+)$/.exec(parts[1]!);
      if (!m) fail(`"${parts[1]}" in "${elem}" is not proto:port (tcp, udp or sctp)`);
      const proto = m[1] as L4;
      const port = parsePort(m[2]!, fail);
      return [[`${formatIPv4(ip!)},${proto}:${port},${formatIPv4(ip2!)}`, { ip: ip!, proto, port, ip2: ip2! }]];
    }
    case 'hash:ip,port': {
      const comma = elem.indexOf(',');
      if (comma < 0) fail(`"${elem}" is not IP,proto:port`);
      const ips = expandIps(elem.slice(0, comma));
      let portText = elem.slice(comma + 1);
      let proto: L4 = 'tcp'; // ipset: a bare port means TCP.
      const colon = portText.indexOf(':');
      if (colon >= 0) {
        const p = portText.slice(0, colon);
        if (p !== 'tcp' && p !== 'udp' && p !== 'sctp') fail(`unsupported protocol "${p}" in "${elem}"`);
        proto = p;
        portText = portText.slice(colon + 1);
      }
      const dash = portText.indexOf('-');
      const from = parsePort(dash < 0 ? portText : portText.slice(0, dash), fail);
      const to = dash < 0 ? from : parsePort(portText.slice(dash + 1), fail);
      if (from > to) fail(`invalid port range in "${elem}"`);
      if (ips.length * (to - from + 1) > MAX_EXPANSION) fail(`"${elem}" expands too far (tracer limit ${MAX_EXPANSION})`);
      const out: Array<[string, IpsetEntry]> = [];
      for (const ip of ips) {
        for (let port = from; port <= to; port++) out.push([`${formatIPv4(ip)},${proto}:${port}`, { ip, proto, port }]);
      }
      return out;
    }
    case 'hash:net,net': {
      const parts = elem.split(',');
      if (parts.length !== 2) fail(`"${elem}" is not NET,NET`);
      const a = parseSetNet(parts[0]!, fail);
      const b = parseSetNet(parts[1]!, fail);
      return [[`${formatNet(a)},${formatNet(b)}`, { a, b, nomatch }]];
    }
  }
}

/**
 * Parses (applies) `ipset restore` text: create / add / del / flush / destroy / swap, `#`
 * comments and blank lines. Errors are RestoreError with the line number.
 */
export function parseIpsetRestore(text: string, opts: IpsetRestoreOptions = {}): IpsetState {
  const sets = new Map<string, IpsetData>();
  for (const [n, s] of opts.base?.sets ?? []) sets.set(n, { ...s, entries: new Map(s.entries) });
  let lineNo = 0;
  for (const raw of text.split('\n')) {
    lineNo++;
    const lineText = raw.trim();
    const fail: Fail = (message) => {
      throw new RestoreError('ipset restore', lineNo, message, lineText);
    };
    if (lineText === '' || lineText.startsWith('#')) continue;
    const all = lineText.split(/[ \t]+/);
    const exist = opts.exist || all.includes('-exist') || all.includes('-!');
    const words = all.filter((w) => w !== '-exist' && w !== '-!');
    const [cmd, name, ...rest] = words;
    const needSet = (n: string | undefined): IpsetData => {
      if (n === undefined) fail(`${cmd} needs a set name`);
      const s = sets.get(n);
      if (!s) fail(`the set with the given name does not exist: ${n}`);
      return s;
    };
    switch (cmd) {
      case 'create':
      case '-N': {
        if (name === undefined || rest[0] === undefined) fail('create needs a name and a type');
        if (name.length > MAX_SET_NAME) fail(`set name "${name}" is ${name.length} characters (max ${MAX_SET_NAME})`);
        const type = rest[0];
        if (!IPSET_TYPES.has(type)) fail(`unsupported set type "${type}"`);
        let maxelem = 65536;
        let timeout: number | undefined;
        for (let i = 1; i < rest.length; i++) {
          const opt = rest[i]!;
          const val = rest[i + 1];
          const num = (): number => {
            if (val === undefined || !/^[1-9][0-9]*$/.test(val)) fail(`create option ${opt} needs a positive number`);
            i++;
            return Number(val);
          };
          if (opt === 'family') {
            if (val !== 'inet') fail(`unsupported family "${val}" (the tracer models IPv4 only)`);
            i++;
          } else if (opt === 'hashsize') num();
          else if (opt === 'maxelem') maxelem = num();
          else if (opt === 'timeout') timeout = num();
          else fail(`unsupported create option "${opt}"`);
        }
        const existing = sets.get(name);
        if (existing) {
          if (!exist) fail(`set ${name} already exists`);
          if (existing.type !== type || existing.maxelem !== maxelem || existing.timeout !== timeout) {
            fail(`set ${name} already exists with different type or options`);
          }
          break;
        }
        sets.set(name, { name, type: type as IpsetType, maxelem, ...(timeout !== undefined && { timeout }), entries: new Map() });
        break;
      }
      case 'add':
      case '-A':
      case 'del':
      case '-D': {
        const s = needSet(name);
        const [elem, ...opts] = rest;
        if (elem === undefined) fail(`${cmd} needs an element`);
        // Element options: `nomatch`, and `timeout N` on a set created with a timeout.
        let flag: string | undefined;
        for (let i = 0; i < opts.length; i++) {
          const o = opts[i]!;
          if (o === 'timeout') {
            if (s.timeout === undefined) fail(`set ${s.name} was created without timeout: its elements take none`);
            if (!/^[0-9]+$/.test(opts[i + 1] ?? '')) fail('element option timeout needs a number of seconds');
            i++;
          } else if (o === 'nomatch' && flag === undefined) flag = o;
          else fail(`unsupported element option "${o}"`);
        }
        const adding = cmd === 'add' || cmd === '-A';
        if (!adding && opts.length > 0) fail(`del takes no "${opts.join(' ')}"`);
        for (const [key, entry] of parseElement(s, elem, flag === 'nomatch', fail)) {
          if (adding) {
            // With -exist the element is re-added with the new flags (nomatch on or off).
            if (s.entries.has(key) && !exist) fail(`element ${key} is already in set ${s.name}`);
            if (!s.entries.has(key) && s.entries.size >= s.maxelem) fail(`set ${s.name} is full (maxelem ${s.maxelem})`);
            s.entries.set(key, entry);
          } else {
            if (!s.entries.has(key) && !exist) fail(`element ${key} is not in set ${s.name}`);
            s.entries.delete(key);
          }
        }
        break;
      }
      case 'flush':
      case '-F':
        if (name === undefined) for (const s of sets.values()) s.entries = new Map();
        else needSet(name).entries = new Map();
        break;
      case 'destroy':
      case '-X':
        if (name === undefined) sets.clear();
        else {
          needSet(name);
          sets.delete(name);
        }
        break;
      case 'swap':
      case '-W': {
        const a = needSet(name);
        const b = needSet(rest[0]);
        if (a.type !== b.type) fail(`cannot swap ${a.name} (${a.type}) with ${b.name} (${b.type})`);
        sets.set(a.name, { ...b, name: a.name });
        sets.set(b.name, { ...a, name: b.name });
        break;
      }
      default:
        fail(`unsupported ipset command "${cmd}"`);
    }
  }
  return { sets };
}

// ─── set lookup, as the kernel does it ──────────────────────────────────────────────────────

function setDimension(type: IpsetType): number {
  return type === 'hash:ip' || type === 'hash:net' ? 1 : type === 'hash:ip,port,ip' ? 3 : 2;
}

function packetIp(p: Packet, dir: 'src' | 'dst', fail: Fail): number {
  const text = dir === 'src' ? p.src : p.dst;
  const ip = parseIPv4(text);
  if (ip === undefined) fail(`packet ${dir} "${text}" is not an IPv4 address`);
  return ip;
}

function packetPort(p: Packet, dir: 'src' | 'dst', fail: Fail): number {
  const port = dir === 'src' ? p.sport : p.dport;
  if (port === undefined) fail(`the packet has no ${dir === 'src' ? 'sport' : 'dport'} but a rule or set needs it`);
  return port;
}

/** What a `-j SET` does to the set for this packet (TraceOptions.setTargets); only the kinds of set our rules fill. */
function applySetTarget(set: IpsetData, tg: Extract<Target, { kind: 'SET' }>, p: Packet, fail: Fail): void {
  if (set.type !== 'hash:ip,port,ip') fail(`SET into a ${set.type} set is not modelled`);
  if (tg.dirs.length < 3) return; // the kernel ignores an element it cannot build
  // ipset takes no element from a packet without ports here (ICMP's type and code are not modelled).
  if (p.protocol !== 'tcp' && p.protocol !== 'udp' && p.protocol !== 'sctp') return;
  const ip = packetIp(p, tg.dirs[0]!, fail);
  const port = packetPort(p, tg.dirs[1]!, fail);
  const ip2 = packetIp(p, tg.dirs[2]!, fail);
  const key = `${formatIPv4(ip)},${p.protocol}:${port},${formatIPv4(ip2)}`;
  if (tg.op === 'del') {
    set.entries.delete(key);
    return;
  }
  if (!set.entries.has(key) && set.entries.size >= set.maxelem) return; // a full set refuses, silently for the kernel's rules
  set.entries.set(key, { ip, proto: p.protocol, port, ip2 });
}

/**
 * Whether the packet is in the set, looked up with the rule's directions. Kernel facts:
 * - ip_set_test returns "no match" when the rule gives fewer directions than the set has
 *   dimensions (silently: `--match-set ipport dst` never matches); extra directions are ignored.
 * - hash:net tries prefixes from most to least specific; the first entry found decides, and a
 *   `nomatch` entry makes the set not match.
 * - hash:net,net does the same with the first dimension's prefixes outermost.
 * - hash:ip,port compares the packet's protocol too; an ICMP packet never hits a tcp/udp/sctp entry.
 */
export function setMatches(
  set: IpsetData,
  dirs: readonly ('src' | 'dst')[],
  p: Packet,
  fail: Fail = throwError,
): boolean {
  if (dirs.length < setDimension(set.type)) return false;
  const d0 = dirs[0]!;
  switch (set.type) {
    case 'hash:ip':
      return set.entries.has(formatIPv4(packetIp(p, d0, fail)));
    case 'hash:net': {
      const ip = packetIp(p, d0, fail);
      for (let prefix = 32; prefix >= 1; prefix--) {
        const e = set.entries.get(formatNet({ net: (ip & prefixMask(prefix)) >>> 0, prefix })) as NetEntry | undefined;
        if (e) return !e.nomatch;
      }
      return false;
    }
    case 'hash:ip,port': {
      if (p.protocol === 'icmp') return false;
      const ip = packetIp(p, d0, fail);
      const port = packetPort(p, dirs[1]!, fail);
      return set.entries.has(`${formatIPv4(ip)},${p.protocol}:${port}`);
    }
    case 'hash:ip,port,ip': {
      if (p.protocol === 'icmp') return false;
      const port = packetPort(p, dirs[1]!, fail);
      return set.entries.has(`${formatIPv4(packetIp(p, d0, fail))},${p.protocol}:${port},${formatIPv4(packetIp(p, dirs[2]!, fail))}`);
    }
    case 'hash:net,net': {
      const a = packetIp(p, d0, fail);
      const b = packetIp(p, dirs[1]!, fail);
      let best: NetNetEntry | undefined;
      for (const e of set.entries.values()) {
        const x = e as NetNetEntry;
        if (!inNet(a, x.a.net, x.a.prefix) || !inNet(b, x.b.net, x.b.prefix)) continue;
        if (!best || x.a.prefix > best.a.prefix || (x.a.prefix === best.a.prefix && x.b.prefix > best.b.prefix)) best = x;
      }
      return best !== undefined && !best.nomatch;
    }
  }
}

// ─── evaluation ─────────────────────────────────────────────────────────────────────────────

/** A TCP packet's flag bits: as given, or by default a SYN when NEW and an ACK otherwise (Packet.tcpFlags). */
function packetTcpFlags(p: Packet): number {
  const flags = p.tcpFlags ?? ((p.ctstate ?? 'NEW') === 'NEW' ? ['SYN'] : ['ACK']);
  return flags.reduce((bits, f) => bits | TCP_FLAG_BITS[f], 0);
}

function ifaceMatches(m: IfaceMatch, name: string | undefined, which: string, fail: Fail): boolean {
  // A rule that tests an interface on a packet that does not say which one is a test bug, not
  // a non-match: refuse rather than guess.
  if (name === undefined) fail(`the rule tests ${which} but the packet has no ${which === '-i' ? 'inIface' : 'outIface'}`);
  const hit = m.name.endsWith('+') ? name.startsWith(m.name.slice(0, -1)) : name === m.name;
  return hit !== m.negate;
}

function inRange(v: number, r: PortRange): boolean {
  return v >= r.from && v <= r.to;
}

/**
 * The node's local addresses as a test (TraceOptions.local): the addresses and nets given, and
 * lo's 127.0.0.0/8 (the kernel's local table holds it on every node). Undefined without them.
 */
function localTest(local: readonly string[] | undefined): ((ip: number) => boolean) | undefined {
  if (local === undefined) return undefined;
  const nets = ['127.0.0.0/8', ...local].map((text) => {
    const n = parseNet(text);
    if (!n) throw new Error(`trace: local address "${text}" is not a.b.c.d or a.b.c.d/N`);
    return n;
  });
  return (ip) => nets.some((n) => inNet(ip, n.net, n.prefix));
}

function addrTypeMatches(c: AddrTypeCondition, ip: number, isLocal: ((ip: number) => boolean) | undefined, which: string, fail: Fail): boolean {
  // Which addresses are the node's is a fact of the node, not of the rules: a trace that was
  // not told them cannot answer, as for a packet without interfaces.
  if (!isLocal) fail(`the rule tests ${which} but the trace has no local addresses (TraceOptions.local)`);
  // Only LOCAL is parsed (AddrType), so the type is LOCAL.
  return isLocal(ip) !== c.negate;
}

function ruleMatches(r: ParsedRule, p: Packet, mark: number, ipsets: IpsetState, isLocal: ((ip: number) => boolean) | undefined, fail: Fail): boolean {
  if (r.src && ((packetIp(p, 'src', fail) & r.src.mask) >>> 0 === r.src.net) === r.src.negate) return false;
  if (r.dst && ((packetIp(p, 'dst', fail) & r.dst.mask) >>> 0 === r.dst.net) === r.dst.negate) return false;
  if (r.protocol && (p.protocol === r.protocol.name) === r.protocol.negate) return false;
  if (r.inIface && !ifaceMatches(r.inIface, p.inIface, '-i', fail)) return false;
  if (r.outIface && !ifaceMatches(r.outIface, p.outIface, '-o', fail)) return false;
  for (const m of r.matches) {
    switch (m.kind) {
      case 'l4': {
        // The parser guarantees -p equals the module, so the packet's protocol is m.proto here.
        if (m.dport && inRange(packetPort(p, 'dst', fail), m.dport.range) === m.dport.negate) return false;
        if (m.sport && inRange(packetPort(p, 'src', fail), m.sport.range) === m.sport.negate) return false;
        // xt_tcp: (flags & mask) == comp, inverted by `!`.
        if (m.flags && (((packetTcpFlags(p) & m.flags.mask) === m.flags.comp) === m.flags.negate)) return false;
        break;
      }
      case 'multiport': {
        const test = (port: number) => m.ranges.some((x) => inRange(port, x));
        let hit: boolean;
        if (m.which === 'dports') hit = test(packetPort(p, 'dst', fail));
        else if (m.which === 'sports') hit = test(packetPort(p, 'src', fail));
        else hit = test(packetPort(p, 'src', fail)) || test(packetPort(p, 'dst', fail));
        if (hit === m.negate) return false;
        break;
      }
      case 'set': {
        const s = ipsets.sets.get(m.set);
        if (!s) fail(`rule matches set "${m.set}", which does not exist (the kernel refuses such a rule)`);
        if (setMatches(s, m.dirs, p, fail) === m.negate) return false;
        break;
      }
      case 'conntrack':
        // SNAT/DNAT are "was this connection NATed" states; the Packet model has no NAT, so
        // answering would be a guess.
        if (m.states.includes('SNAT') || m.states.includes('DNAT')) fail('--ctstate SNAT/DNAT is not modelled');
        if (m.states.includes(p.ctstate ?? 'NEW') === m.negate) return false;
        break;
      case 'comment':
      case 'hashlimit':
        break;
      case 'mark':
        if ((((mark & m.mask) >>> 0) === m.value) === m.negate) return false;
        break;
      case 'addrtype':
        // xt_addrtype addrtype_mt_v1: the source's type first, then the destination's.
        if (m.src && !addrTypeMatches(m.src, packetIp(p, 'src', fail), isLocal, '--src-type', fail)) return false;
        if (m.dst && !addrTypeMatches(m.dst, packetIp(p, 'dst', fail), isLocal, '--dst-type', fail)) return false;
        break;
    }
  }
  return true;
}

export interface TraceStep {
  readonly chain: string;
  /** 1-based position in the chain, as `iptables -L --line-numbers` numbers rules. */
  readonly index: number;
  /** The rule as written in the restore text. */
  readonly rule: string;
  readonly line: number;
  readonly matched: boolean;
  /** Call depth: 0 in the hook's built-in chain. */
  readonly depth: number;
}

export interface TraceResult {
  readonly verdict: 'ACCEPT' | 'DROP';
  readonly steps: TraceStep[];
  /** The rule that decided; absent when the built-in chain's policy did. */
  readonly finalRule?: string;
  /** One line: what decided and why. */
  readonly reason: string;
  /** The packet mark after MARK targets ran. */
  readonly mark: number;
}

export interface TraceOptions {
  /** Default `filter`. */
  readonly table?: string;
  /** Evaluated rules before giving up (a loop the kernel would have refused). Default 100000. */
  readonly maxSteps?: number;
  /**
   * The addresses of the node the packet crosses (`a.b.c.d` or `a.b.c.d/N`): what its local
   * routes hold, the `LOCAL` of `-m addrtype` (lo's 127.0.0.0/8 is added). Absent: a rule that
   * tests an address type is refused, never guessed.
   */
  readonly local?: readonly string[];
  /**
   * `-j SET` rules change `ipsets` as the kernel would (an add of the packet's element; ipset
   * ignores a packet it cannot make an element of, and an add to a full set): for a sequence of
   * traces that share state. Default false: such rules change nothing.
   */
  readonly setTargets?: boolean;
}

/**
 * Runs the packet through `hook` of the filter table as netfilter's ipt_do_table does:
 * - `-j CHAIN` pushes a return point; `-g CHAIN` continues in CHAIN without one, so a RETURN
 *   there (or its end) returns to whoever called the chain that did the goto;
 * - RETURN, or running off the end of a user chain, pops; popping past the built-in chain
 *   (RETURN there, or its end) applies its policy;
 * - ACCEPT / DROP / REJECT end the traversal (REJECT is reported as DROP);
 * - MARK changes the mark seen by later `-m mark` matches; LOG, NFLOG and target-less rules continue.
 */
export function trace(table: Table, ipsets: IpsetState, hook: Hook, packet: Packet, opts: TraceOptions = {}): TraceResult {
  const tableName = opts.table ?? 'filter';
  // A table never mentioned in the text still exists in the kernel with empty ACCEPT chains.
  const t = table.tables.get(tableName) ?? newTable(tableName);
  const base = t.chains.get(hook);
  if (!base?.builtin) throw new Error(`trace: no built-in chain ${hook} in table ${tableName}`);
  const maxSteps = opts.maxSteps ?? 100_000;
  const isLocal = localTest(opts.local);
  const steps: TraceStep[] = [];
  let mark = packet.mark ?? 0;
  // Return points: [chain, next rule index (0-based)] for each -j that is still open.
  const stack: Array<{ chain: ChainState; next: number }> = [];
  let chain = base;
  let pos = 0;

  const policy = (why: string): TraceResult => {
    const verdict = base.policy ?? 'ACCEPT';
    return { verdict, steps, reason: `policy ${verdict} of ${hook} (${why})`, mark };
  };

  for (;;) {
    if (pos >= chain.rules.length) {
      // Off the end: a user chain returns; the built-in chain (or a chain reached from it by
      // goto alone) has nothing to return to, so its policy applies.
      const back = stack.pop();
      if (!back) return policy(chain === base ? `end of ${hook}` : `end of ${chain.name}, reached by goto from ${hook}`);
      chain = back.chain;
      pos = back.next;
      continue;
    }
    const r = chain.rules[pos]!;
    const where = `${chain.name} rule ${pos + 1}`;
    const fail: Fail = (message) => {
      throw new Error(`trace: ${where} (line ${r.line}): ${message}\n  ${r.text}`);
    };
    if (steps.length >= maxSteps) fail(`more than ${maxSteps} rules evaluated: a loop?`);
    const matched = ruleMatches(r, packet, mark, ipsets, isLocal, fail);
    steps.push({ chain: chain.name, index: pos + 1, rule: r.text, line: r.line, matched, depth: stack.length });
    pos++;
    if (!matched || !r.target) continue;
    const tg = r.target;
    switch (tg.kind) {
      case 'ACCEPT':
        return { verdict: 'ACCEPT', steps, finalRule: r.text, reason: `ACCEPT by ${chain.name} rule ${pos}`, mark };
      case 'DROP':
      case 'REJECT':
        return { verdict: 'DROP', steps, finalRule: r.text, reason: `${tg.kind} by ${chain.name} rule ${pos}`, mark };
      case 'RETURN': {
        const back = stack.pop();
        if (!back) return { ...policy(`RETURN in ${chain.name} rule ${pos}`), finalRule: r.text };
        chain = back.chain;
        pos = back.next;
        break;
      }
      case 'LOG':
      case 'NFLOG':
        break;
      case 'MARK':
        mark = ((mark & ~tg.mask) ^ tg.value) >>> 0;
        break;
      case 'SET': {
        const s = ipsets.sets.get(tg.set);
        if (!s) fail(`SET to set "${tg.set}", which does not exist (the kernel refuses such a rule)`);
        if (opts.setTargets) applySetTarget(s, tg, packet, fail);
        break;
      }
      case 'MASQUERADE':
        fail('MASQUERADE cannot be traced in a filter hook');
        break;
      case 'jump':
      case 'goto': {
        const next = t.chains.get(tg.chain);
        if (!next) fail(`${tg.kind} to chain "${tg.chain}", which does not exist`);
        if (tg.kind === 'jump') {
          stack.push({ chain, next: pos });
          // The kernel refuses loops when the table is loaded; a stack deeper than the number of
          // chains can only be one.
          if (stack.length > t.chains.size) fail(`jump depth exceeds the number of chains: a loop through ${tg.chain}?`);
        }
        chain = next;
        pos = 0;
        break;
      }
    }
  }
}

// ─── static checks ──────────────────────────────────────────────────────────────────────────

/**
 * Problems the kernel would refuse or that point at a compiler bug, one string each, sorted
 * by table and line. Warnings (the kernel accepts them) start with `unreferenced:` or `warning:`.
 */
export function checkReferences(table: Table, ipsets: IpsetState): string[] {
  const out: string[] = [];
  for (const t of table.tables.values()) {
    const referenced = new Set<string>();
    const edges = new Map<string, Set<string>>();
    for (const c of t.chains.values()) {
      for (const r of c.rules) {
        const at = `${t.name} ${c.name} line ${r.line}`;
        const tg = r.target;
        if (tg && (tg.kind === 'jump' || tg.kind === 'goto')) {
          referenced.add(tg.chain);
          if (!t.chains.has(tg.chain)) out.push(`${at}: ${tg.kind} to undefined chain ${tg.chain}`);
          else if (!tg.declaredBefore) out.push(`${at}: ${tg.kind} to chain ${tg.chain} before it is declared (iptables-restore fails)`);
          else {
            if (!edges.has(c.name)) edges.set(c.name, new Set());
            edges.get(c.name)!.add(tg.chain);
          }
        }
        for (const m of r.matches) {
          if (m.kind === 'set') {
            const s = ipsets.sets.get(m.set);
            if (!s) out.push(`${at}: matches undefined set ${m.set}`);
            else if (m.dirs.length < setDimension(s.type)) {
              out.push(`warning: ${at}: set ${m.set} (${s.type}) needs ${setDimension(s.type)} directions, the rule gives "${m.dirs.join(',')}" and never matches`);
            }
          }
          if (m.kind === 'comment' && m.givenLength > KERNEL_COMMENT_MAX) {
            out.push(`warning: ${at}: comment of ${m.givenLength} characters; the kernel keeps ${KERNEL_COMMENT_MAX}, so iptables-save will differ from the rendered rule`);
          }
        }
      }
    }
    for (const c of t.chains.values()) {
      if (!c.builtin && !referenced.has(c.name)) out.push(`unreferenced: chain ${c.name} in table ${t.name} is never jumped to`);
    }
    // The kernel refuses a ruleset with a jump loop (mark_source_chains: ELOOP).
    const state = new Map<string, 'open' | 'done'>();
    const visit = (name: string, path: string[]): void => {
      if (state.get(name) === 'done') return;
      if (state.get(name) === 'open') {
        out.push(`${t.name}: loop ${[...path.slice(path.indexOf(name)), name].join(' -> ')} (the kernel refuses it)`);
        return;
      }
      state.set(name, 'open');
      for (const n of edges.get(name) ?? []) visit(n, [...path, name]);
      state.set(name, 'done');
    };
    for (const name of [...t.chains.keys()].sort()) visit(name, []);
  }
  return out;
}

// ─── reporting ──────────────────────────────────────────────────────────────────────────────

/** A trace as text for assertion messages: each rule tried, indented by call depth. */
export function formatTrace(result: TraceResult): string {
  const lines = [`verdict ${result.verdict}: ${result.reason}`];
  if (result.finalRule) lines.push(`  decided by: ${result.finalRule}`);
  for (const s of result.steps) {
    const where = `${s.chain}#${s.index}`;
    lines.push(`  ${'  '.repeat(s.depth)}${s.matched ? 'HIT ' : 'miss'} ${where} (line ${s.line}): ${s.rule}`);
  }
  return lines.join('\n');
}

/** Convenience for tests: parse both texts and trace. */
export function traceTexts(iptables: string, ipset: string, hook: Hook, packet: Packet, opts: TraceOptions = {}): TraceResult {
  return trace(parseIptablesRestore(iptables), parseIpsetRestore(ipset), hook, packet, opts);
}
