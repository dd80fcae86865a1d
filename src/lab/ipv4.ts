// Small IPv4 helpers for the lab (addresses as unsigned 32-bit numbers). Pure.
//
// The lab only deals in IPv4: flannel host-gw, the CNI bridge plugin and the probes all run on
// IPv4 here. These helpers are strict: dotted decimal, four octets, no leading zeros, and a
// CIDR's host bits must be zero (a lab spec is written by us, not read from the API server).

export interface Ipv4Cidr {
  /** Network address, host bits zero. */
  readonly base: number;
  readonly prefix: number;
  /** Canonical text, e.g. "10.244.1.0/24". */
  readonly text: string;
}

export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const octet = Number(part);
    if (octet > 255) return undefined;
    value = value * 256 + octet;
  }
  return value;
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Parses "a.b.c.d/n"; throws an Error naming the value when it is not a canonical IPv4 CIDR. */
export function parseIpv4Cidr(text: string, what = 'CIDR'): Ipv4Cidr {
  const m = /^([0-9.]+)\/([0-9]{1,2})$/.exec(text);
  const ip = m ? parseIpv4(m[1]!) : undefined;
  const prefix = m ? Number(m[2]) : NaN;
  if (ip === undefined || !(prefix >= 0 && prefix <= 32)) {
    throw new Error(`${what} must be an IPv4 CIDR like 10.244.1.0/24, received ${JSON.stringify(text)}`);
  }
  const base = (ip & maskOf(prefix)) >>> 0;
  if (base !== ip) {
    throw new Error(
      `${what} has host bits set: received ${JSON.stringify(text)}, the network is ${formatIpv4(base)}/${prefix}`,
    );
  }
  return { base, prefix, text: `${formatIpv4(base)}/${prefix}` };
}

export function cidrContainsIp(cidr: Ipv4Cidr, ip: number): boolean {
  return ((ip & maskOf(cidr.prefix)) >>> 0) === cidr.base;
}

export function cidrContainsCidr(outer: Ipv4Cidr, inner: Ipv4Cidr): boolean {
  return inner.prefix >= outer.prefix && cidrContainsIp(outer, inner.base);
}

export function cidrsOverlap(a: Ipv4Cidr, b: Ipv4Cidr): boolean {
  return cidrContainsCidr(a, b) || cidrContainsCidr(b, a);
}

/** The n-th address of the CIDR (0 = network address). */
export function nthAddress(cidr: Ipv4Cidr, n: number): number {
  const size = 2 ** (32 - cidr.prefix);
  if (!(n >= 0 && n < size)) {
    throw new Error(`address index ${n} is outside ${cidr.text} (${size} addresses)`);
  }
  return (cidr.base + n) >>> 0;
}

/** The broadcast (last) address of the CIDR. */
export function lastAddress(cidr: Ipv4Cidr): number {
  return (cidr.base + 2 ** (32 - cidr.prefix) - 1) >>> 0;
}
