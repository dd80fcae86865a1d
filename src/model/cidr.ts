// IP address and CIDR parsing, as lenient as the API server is with stored objects.
//
// The API server's legacy parser accepts IPv4 octets with leading zeros (read as decimal, not
// octal) and CIDRs with host bits set (the network is what counts). We accept the same and
// normalize: `010.001.2.3/8` becomes `10.0.0.0/8`.

import type { Cidr } from './types.ts';

export class CidrError extends Error {}

export function parseIPv4(text: string): bigint | undefined {
  const v = ipv4Number(text);
  return v === undefined ? undefined : BigInt(v);
}

export function parseIPv6(text: string): bigint | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(text) || !text.includes(':')) return undefined;
  let head = text;
  let tailV4: bigint | undefined;
  // An embedded IPv4 tail (::ffff:1.2.3.4) counts as two groups.
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    tailV4 = parseIPv4(text.slice(lastColon + 1));
    if (tailV4 === undefined) return undefined;
    head = text.slice(0, lastColon + 1) + '0:0';
  }
  const halves = head.split('::');
  if (halves.length > 2) return undefined;
  const parseGroups = (s: string): number[] | undefined => {
    if (s === '') return [];
    const out: number[] = [];
    for (const g of s.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(Number.parseInt(g, 16));
    }
    return out;
  };
  const left = parseGroups(halves[0]!);
  const right = halves.length === 2 ? parseGroups(halves[1]!) : [];
  if (!left || !right) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const fill = 8 - left.length - right.length;
    if (fill < 1) return undefined;
    groups = [...left, ...new Array<number>(fill).fill(0), ...right];
  } else {
    groups = left;
  }
  if (groups.length !== 8) return undefined;
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  if (tailV4 !== undefined) v = (v & ~0xffffffffn) | tailV4;
  return v;
}

export function formatIPv4(v: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => ((v >> s) & 255n).toString()).join('.');
}

export function formatIPv6(v: bigint): string {
  const groups: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(((v >> s) & 0xffffn).toString(16));
  // Compress the longest run of zero groups (RFC 5952).
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** Parse `a.b.c.d/n` or an IPv6 CIDR; throws CidrError with the value in the message. */
export function parseCidr(text: string): Cidr {
  if (typeof text !== 'string') throw new CidrError(`not a CIDR: ${JSON.stringify(text)}`);
  const slash = text.indexOf('/');
  if (slash < 0) throw new CidrError(`not a CIDR (no prefix length): ${JSON.stringify(text)}`);
  const addr = text.slice(0, slash);
  const prefixText = text.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(prefixText)) throw new CidrError(`bad prefix length in ${JSON.stringify(text)}`);
  const prefix = Number.parseInt(prefixText, 10);
  const v4 = parseIPv4(addr);
  if (v4 !== undefined) {
    if (prefix > 32) throw new CidrError(`prefix length ${prefix} is more than 32 in ${JSON.stringify(text)}`);
    const network = prefix === 0 ? 0n : (v4 >> BigInt(32 - prefix)) << BigInt(32 - prefix);
    return { family: 4, prefix, network, text: `${formatIPv4(network)}/${prefix}`, written: text };
  }
  const v6 = parseIPv6(addr);
  if (v6 !== undefined) {
    if (prefix > 128) throw new CidrError(`prefix length ${prefix} is more than 128 in ${JSON.stringify(text)}`);
    const network = prefix === 0 ? 0n : (v6 >> BigInt(128 - prefix)) << BigInt(128 - prefix);
    return { family: 6, prefix, network, text: `${formatIPv6(network)}/${prefix}`, written: text };
  }
  throw new CidrError(`not a valid IP address in CIDR ${JSON.stringify(text)}`);
}

/** Parse a single IPv4 address into canonical text, or undefined. */
export function normalizeIPv4(text: string): string | undefined {
  const v = parseIPv4(text);
  return v === undefined ? undefined : formatIPv4(v);
}

export function cidrContainsIp(c: Cidr, ip: string): boolean {
  if (c.family !== 4) return false; // the enforcer programs IPv4 only; see README
  // In 32-bit numbers, not parseIPv4's bigints: the compilers ask this for every local pod of a
  // node on each ClusterNetworkPolicy change (tiers.ts SharedAdminPrefix.gates).
  const v = ipv4Number(ip);
  if (v === undefined) return false;
  return c.prefix === 0 || ((v ^ Number(c.network)) >>> (32 - c.prefix)) === 0;
}

/**
 * An IPv4 address as an unsigned 32-bit number: four decimal octets of one to three digits each,
 * leading zeros allowed (as the API server's legacy parser reads them). parseIPv4 is this as a bigint.
 */
export function ipv4Number(text: string): number | undefined {
  let v = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch >= 48 && ch <= 57) {
      if (++digits > 3) return undefined;
      octet = octet * 10 + (ch - 48);
    } else if (ch === 46 && digits > 0 && dots < 3) {
      if (octet > 255) return undefined;
      v = v * 256 + octet;
      octet = digits = 0;
      dots++;
    } else return undefined;
  }
  if (dots !== 3 || digits === 0 || octet > 255) return undefined;
  return v * 256 + octet;
}

/**
 * The address a node's bridge holds in one of its pod CIDRs: the first host address. The bridge
 * plugin with `isGateway` gives the bridge host-local's gateway, which is that address unless
 * the range names another; flannel's and canal's configurations keep the default (flannel's
 * FLANNEL_SUBNET is that address too). It is the node's, never a pod's. Undefined for a CIDR
 * with no host addresses (/31, /32).
 */
export function bridgeAddress(c: Cidr): string | undefined {
  if (c.family !== 4 || c.prefix > 30) return undefined;
  return formatIPv4(c.network + 1n);
}

/** True when `inner` lies inside `outer` (equal counts as inside). */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  if (outer.family !== inner.family || inner.prefix < outer.prefix) return false;
  const bits = outer.family === 4 ? 32 : 128;
  const shift = BigInt(bits - outer.prefix);
  return outer.prefix === 0 || inner.network >> shift === outer.network >> shift;
}
