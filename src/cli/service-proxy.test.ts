// `policyctl agent --service-proxy/--service-cidr/--node-port-range` (issue 13): what is
// accepted, what is refused with a usage error, and the defaults.

import { describe, expect, it } from 'vitest';
import { serviceProxyOptions } from './agent.ts';
import { CliError, EXIT } from './io.ts';
import { runCli } from '../../test/support/cli.ts';

const run = (argv: string[]) => runCli(argv);

describe('serviceProxyOptions', () => {
  it('defaults to auto, no Service CIDR, the API server default node ports', () => {
    expect(serviceProxyOptions({})).toEqual({ serviceProxy: 'auto', serviceCidrs: [], nodePorts: { from: 30000, to: 32767 } });
  });

  it('takes a mode, Service CIDRs and a node port range', () => {
    expect(serviceProxyOptions({ serviceProxy: 'ipvs', serviceCidr: ['10.96.0.0/12', '10.100.0.0/16'], nodePortRange: '31000-31999' })).toEqual({
      serviceProxy: 'ipvs',
      serviceCidrs: ['10.96.0.0/12', '10.100.0.0/16'],
      nodePorts: { from: 31000, to: 31999 },
    });
  });

  it.each([
    [{ serviceProxy: 'userspace' }, /--service-proxy must be auto, iptables, nftables, ipvs/],
    [{ serviceCidr: ['10.96.0.0'] }, /--service-cidr must be an IPv4 CIDR/],
    [{ serviceCidr: ['fd00::/108'] }, /--service-cidr must be an IPv4 CIDR/],
    [{ nodePortRange: '32767-30000' }, /--node-port-range must be FROM-TO/],
    [{ nodePortRange: '30000-70000' }, /--node-port-range must be FROM-TO/],
    [{ nodePortRange: '30000' }, /--node-port-range must be FROM-TO/],
  ])('refuses %j', (o, message) => {
    let err: unknown;
    try {
      serviceProxyOptions(o);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CliError);
    expect((err as Error).message).toMatch(message);
    expect((err as CliError).code).toBe(EXIT.usage);
  });
});

describe('policyctl compile --service-proxy', () => {
  it('ipvs: says so, hooks OUTPUT and returns the Service CIDR at INPUT; iptables (default) and nftables: neither', async () => {
    const base = ['compile', '-f', 'examples', '--node', 'node-1'];
    const ipvs = await run([...base, '--service-proxy', 'ipvs', '--service-cidr', '10.96.0.0/12']);
    expect(ipvs.code).toBe(0);
    expect(ipvs.out.split('\n')[0]).toBe('# kube-proxy IPVS mode: Service CIDRs 10.96.0.0/12, node ports 30000-32767');
    expect(ipvs.out).toMatch(/^-I OUTPUT 1 .*-j PCTL-OUTPUT$/m);
    expect(ipvs.out).toMatch(/^-A PCTL-INPUT -d 10\.96\.0\.0\/12 .*-j RETURN$/m);
    const plain = await run(base);
    expect(plain.out).not.toContain('PCTL-OUTPUT');
    expect((await run([...base, '--service-proxy', 'nftables'])).out).toBe(plain.out);
  });
});
