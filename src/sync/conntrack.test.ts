import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createNetns, kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { deleteAddressFlows, deleteFlow, listFlows, parseConntrackList } from './conntrack.ts';

describe('parseConntrackList', () => {
  it('reads the original and reply tuples (the reply ports too), protocol and state', () => {
    const text = [
      'ipv4     2 tcp      6 431999 ESTABLISHED src=10.244.1.2 dst=10.96.0.10 sport=40000 dport=80 src=10.244.2.3 dst=10.244.1.2 sport=8080 dport=40000 [ASSURED] mark=0 use=1',
      'ipv4     2 udp      17 29 src=10.244.1.2 dst=10.244.2.3 sport=4000 dport=53 [UNREPLIED] src=10.244.2.3 dst=10.244.1.2 sport=53 dport=4000 mark=0 use=1',
      'ipv4     2 icmp     1 29 src=10.244.1.2 dst=10.244.2.3 type=8 code=0 id=7 src=10.244.2.3 dst=10.244.1.2 type=0 code=0 id=7 mark=0 use=1',
      'ipv4     2 unknown  4 599 src=10.244.1.2 dst=10.244.2.3 src=10.244.2.3 dst=10.244.1.2 mark=0 use=1',
      'ipv6     10 tcp      6 100 ESTABLISHED src=fd00::1 dst=fd00::2 sport=1 dport=2 src=fd00::2 dst=fd00::1 sport=2 dport=1 mark=0 use=1',
      'garbage',
    ].join('\n');
    expect(parseConntrackList(text)).toEqual([
      { protocol: 'tcp', src: '10.244.1.2', dst: '10.96.0.10', sport: 40000, dport: 80, replySrc: '10.244.2.3', replyDst: '10.244.1.2', replySport: 8080, replyDport: 40000, state: 'ESTABLISHED' },
      { protocol: 'udp', src: '10.244.1.2', dst: '10.244.2.3', sport: 4000, dport: 53, replySrc: '10.244.2.3', replyDst: '10.244.1.2', replySport: 53, replyDport: 4000 },
      { protocol: 'icmp', src: '10.244.1.2', dst: '10.244.2.3', replySrc: '10.244.2.3', replyDst: '10.244.1.2' },
      { protocol: '4', src: '10.244.1.2', dst: '10.244.2.3', replySrc: '10.244.2.3', replyDst: '10.244.1.2' },
    ]);
  });
});

describe.runIf(kernelTestsEnabled())('conntrack on the real kernel', () => {
  let net: TestNetns;
  beforeEach(() => {
    net = createNetns('pctl-ct');
  });
  afterEach(() => net.remove());

  const insert = (src: string, dst: string, proto: string, sport: number, dport: number, replySrc?: string) =>
    net.sh(
      `conntrack -I -s ${src} -d ${dst} -p ${proto} --sport ${sport} --dport ${dport} ` +
        (replySrc ? `-r ${replySrc} -q ${src} --reply-port-src 8080 --reply-port-dst ${sport} ` : '') +
        `${proto === 'tcp' ? '--state ESTABLISHED ' : ''}--timeout 300 2>&1`,
    );

  it('deletes every entry of an address, as source, destination or DNAT backend, and nothing else', async () => {
    insert('10.244.1.5', '10.244.2.3', 'udp', 4000, 53);
    insert('10.244.2.3', '10.244.1.5', 'tcp', 4001, 80);
    insert('10.244.2.9', '10.96.0.10', 'tcp', 4002, 80, '10.244.1.5'); // a Service DNATed to it
    insert('10.244.2.9', '10.244.2.3', 'tcp', 4003, 80); // unrelated
    expect(await listFlows(net.runner)).toHaveLength(4);
    const n = await deleteAddressFlows(net.runner, ['10.244.1.5', '10.244.1.77']);
    expect(n).toBe(3);
    expect((await listFlows(net.runner)).map((f) => `${f.src}>${f.dst}`)).toEqual(['10.244.2.9>10.244.2.3']);
  });

  it('entries of other protocols (ICMP, GRE) go too; a tuple conntrack refuses falls back to deleting by address', async () => {
    net.sh('conntrack -I -s 10.244.1.5 -d 10.244.2.3 -p icmp --icmp-type 8 --icmp-code 0 --icmp-id 7 -t 100 2>&1');
    net.sh('conntrack -I -s 10.244.2.3 -d 10.244.1.5 -p gre --srckey 1 --dstkey 2 -t 100 2>&1');
    insert('10.244.2.9', '10.244.2.3', 'tcp', 4003, 80); // unrelated
    expect(await deleteAddressFlows(net.runner, ['10.244.1.5'])).toBe(2);
    expect((await listFlows(net.runner)).map((f) => `${f.src}>${f.dst}`)).toEqual(['10.244.2.9>10.244.2.3']);
    // A runner whose conntrack refuses the tuple of one flow: the entries still go, by address.
    insert('10.244.1.5', '10.244.2.3', 'udp', 4000, 53);
    const refusing = { run: (cmd: string, args: readonly string[], o?: { input?: string }) => (args.includes('--sport') ? Promise.resolve({ stdout: '', stderr: 'conntrack v1.4.7 (conntrack-tools): unknown protocol\n', exitCode: 2 }) : net.runner.run(cmd, args, o)) };
    expect(await deleteAddressFlows(refusing, ['10.244.1.5'])).toBe(1);
    expect((await listFlows(net.runner)).map((f) => `${f.src}>${f.dst}`)).toEqual(['10.244.2.9>10.244.2.3']);
  });

  it('many entries of an address: deleted by address, all of them and nothing else', async () => {
    for (let i = 0; i < 12; i++) insert('10.244.1.5', '10.244.2.3', 'udp', 5000 + i, 53);
    insert('10.244.2.3', '10.244.1.5', 'tcp', 4001, 80);
    insert('10.244.2.9', '10.96.0.10', 'tcp', 4002, 80, '10.244.1.5');
    insert('10.244.2.9', '10.244.2.3', 'tcp', 4003, 80);
    expect(await deleteAddressFlows(net.runner, ['10.244.1.5'])).toBe(14);
    expect((await listFlows(net.runner)).map((f) => `${f.src}>${f.dst}`)).toEqual(['10.244.2.9>10.244.2.3']);
    expect(await deleteAddressFlows(net.runner, ['10.244.1.5'])).toBe(0);
  });

  it('deletes one flow by its tuple; nothing to delete is not an error', async () => {
    insert('10.244.1.5', '10.244.2.3', 'udp', 4000, 53);
    insert('10.244.1.5', '10.244.2.3', 'udp', 4001, 53);
    expect(await deleteFlow(net.runner, { protocol: 'udp', src: '10.244.1.5', dst: '10.244.2.3', sport: 4000, dport: 53 })).toBe(1);
    expect(await deleteFlow(net.runner, { protocol: 'udp', src: '10.244.1.5', dst: '10.244.2.3', sport: 4000, dport: 53 })).toBe(0);
    expect((await listFlows(net.runner)).map((f) => f.sport)).toEqual([4001]);
  });
});
