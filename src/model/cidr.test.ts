import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cidrContainsIp, ipv4Number, parseCidr, parseIPv4 } from './cidr.ts';

/** The reading the API server's legacy parser does, written out plainly here (not the module's code): four decimal octets, 1-3 digits, at most 255. */
function reference(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^[0-9]{1,3}$/.test(p) || Number(p) > 255)) return undefined;
  return parts.reduce((v, p) => v * 256 + Number(p), 0);
}

describe('ipv4Number', () => {
  it('reads an address as parseIPv4 does, as a 32-bit number', () => {
    expect(ipv4Number('10.244.1.7')).toBe(0x0af40107);
    expect(ipv4Number('255.255.255.255')).toBe(0xffffffff);
    expect(ipv4Number('0.0.0.0')).toBe(0);
    expect(ipv4Number('010.001.2.3')).toBe(0x0a010203); // leading zeros: decimal, as the API server reads them
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '1..2.3', '.1.2.3', '1.2.3.', '256.1.1.1', '1.2.3.0256', '1.2.3.0255', '0010.1.1.1', '1.2.3.a', '1.2.3.4 ', '::1', '-1.2.3.4']) {
      expect(ipv4Number(bad), bad).toBeUndefined();
      expect(parseIPv4(bad), bad).toBeUndefined();
    }
  });

  it('reads any text of digits and dots as the reference does; parseIPv4 is the same as a bigint', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[0-9.]{0,17}$/), (text) => {
        const want = reference(text);
        expect(ipv4Number(text)).toBe(want);
        expect(parseIPv4(text)).toBe(want === undefined ? undefined : BigInt(want));
      }),
      { numRuns: 3000 },
    );
  });
});

describe('cidrContainsIp', () => {
  it('is the prefix comparison of the addresses, for every prefix length', () => {
    const octet = fc.integer({ min: 0, max: 255 });
    const addr = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'));
    fc.assert(
      fc.property(addr, addr, fc.integer({ min: 0, max: 32 }), (net, ip, prefix) => {
        const c = parseCidr(`${net}/${prefix}`);
        const shift = BigInt(32 - prefix);
        expect(cidrContainsIp(c, ip)).toBe(BigInt(reference(ip)!) >> shift === BigInt(reference(net)!) >> shift);
      }),
      { numRuns: 3000 },
    );
    expect(cidrContainsIp(parseCidr('10.244.1.0/24'), '10.244.1.255')).toBe(true);
    expect(cidrContainsIp(parseCidr('10.244.1.0/24'), '10.244.2.0')).toBe(false);
    expect(cidrContainsIp(parseCidr('0.0.0.0/0'), '255.255.255.255')).toBe(true);
    expect(cidrContainsIp(parseCidr('128.0.0.0/1'), '200.1.1.1')).toBe(true);
    expect(cidrContainsIp(parseCidr('10.244.1.0/24'), 'not an address')).toBe(false);
  });
});
