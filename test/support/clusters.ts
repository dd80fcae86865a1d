// The sample cluster the compiler, incremental compiler and sync tests share: two namespaces with
// local pods on n1 (x with web and db pods, y with a web pod), remote pods on n2 (a hostNetwork
// one included), and policies that exercise every rule shape the compiler emits: a default deny,
// pod, namespace and ipBlock peers (with except), numeric, named (TCP and UDP), ranged and SCTP
// ports, ingress and egress.

import type { Model } from '../../src/model/store.ts';
import { block, modelOf, node, ns, nsPeer, pod, podsPeer, policy, port, ports, rule, sel } from './builders.ts';

export function sampleCluster(): Model {
  return modelOf(
    ns('x', { team: 'a' }),
    ns('y'),
    node('n1', '10.244.1.0/24', '192.168.50.11'),
    pod('x', 'a', { app: 'web' }, { ip: '10.244.1.10', node: 'n1', ports: [port(80, 'http'), port(53, 'dns', 'UDP')] }),
    pod('x', 'a2', { app: 'web' }, { ip: '10.244.1.12', node: 'n1', ports: [port(80, 'http'), port(53, 'dns', 'UDP')] }),
    pod('x', 'b', { app: 'db' }, { ip: '10.244.1.11', node: 'n1' }),
    pod('y', 'c', { app: 'web' }, { ip: '10.244.2.10', node: 'n2', ports: [port(8080, 'http')] }),
    pod('y', 'd', { app: 'web' }, { ip: '10.244.1.14', node: 'n1', ports: [port(8080, 'http')] }),
    pod('x', 'r', { app: 'other' }, { ip: '10.244.2.11', node: 'n2' }),
    pod('y', 's', { app: 'db' }, { ip: '10.244.2.12', node: 'n2' }),
    pod('y', 'h', { app: 'db' }, { ip: '192.168.50.12', node: 'n2', hostNetwork: true }),
    policy('x', 'deny', sel(), { types: ['Ingress'], ingress: [] }),
    policy('x', 'allow', sel({ app: 'web' }), {
      ingress: [
        rule([podsPeer('x', sel({ app: 'db' })), nsPeer(sel({ team: 'a' })), block('0.0.0.0/0', ['10.0.0.0/8'])], ports('http', { protocol: 'UDP', port: 'dns' }, [1000, 2000])),
      ],
    }),
    policy('x', 'eg', sel({ app: 'db' }), { types: ['Egress'], egress: [rule([nsPeer(sel())], ports('http')), rule([block('192.168.0.0/16')], ports({ protocol: 'SCTP' }))] }),
    policy('y', 'web', sel({ app: 'web' }), { ingress: [rule([nsPeer(sel(), sel({ app: 'db' }))])] }),
  );
}
