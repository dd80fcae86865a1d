// Names of everything a lab creates. Deterministic: a name depends only on the lab name and the
// object it names, so another process (`policyctl lab down`, an agent) finds the same objects
// without reading the state file.
//
// Network namespaces (files under /run/netns):
//   pl-<lab>.sw            the underlay "switch" (bridge br0) and the external host at .1
//   pl-<lab>.n.<node>      one per node
//   pl-<lab>.p.<hash>      one per pod (hash of "<namespace>/<name>")
// Lab names may not contain '.', so the prefix "pl-<lab>." never matches another lab's objects
// (with '-' as the separator, lab "a" would sweep lab "a-b").
//
// Interfaces are named inside the lab's own namespaces only, so they cannot collide with the
// machine's or another lab's: br0 and v-<node> in the switch, eth0 and cni0 in a node, eth0 in a
// pod (the CNI plugin names the node-side veth vethXXXXXXXX). All are at most 15 characters.

import { createHash } from 'node:crypto';

export const NETNS_PREFIX = 'pl-';
export const MAX_LAB_NAME = 12;
export const MAX_NODE_NAME = 12;
export const MAX_IFNAME = 15;
export const SWITCH_BRIDGE = 'br0';
export const NODE_UPLINK = 'eth0';
export const CNI_BRIDGE = 'cni0';
export const POD_IFNAME = 'eth0';
export const CNI_NETWORK_NAME = 'cbr0';

const LAB_NAME_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
const NODE_NAME_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
const DNS_LABEL_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export class LabNameError extends Error {
  override name = 'LabNameError';
}

export function validateLabName(name: string): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_LAB_NAME || !LAB_NAME_RE.test(name)) {
    throw new LabNameError(
      `lab name must be 1-${MAX_LAB_NAME} characters of [a-z0-9-], starting and ending with a letter or digit; received ${JSON.stringify(name)}`,
    );
  }
  return name;
}

export function validateNodeName(name: string): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_NODE_NAME || !NODE_NAME_RE.test(name)) {
    throw new LabNameError(
      `lab node name must be 1-${MAX_NODE_NAME} characters of [a-z0-9-], starting and ending with a letter or digit; received ${JSON.stringify(name)}`,
    );
  }
  return name;
}

/** Pod namespace: a DNS label (<= 63); pod name: a DNS subdomain (<= 253). */
export function validatePodName(namespace: string, name: string): void {
  if (typeof namespace !== 'string' || namespace.length > 63 || !DNS_LABEL_RE.test(namespace)) {
    throw new LabNameError(`pod namespace must be a DNS label; received ${JSON.stringify(namespace)}`);
  }
  if (typeof name !== 'string' || name.length > 253 || !DNS_SUBDOMAIN_RE.test(name)) {
    throw new LabNameError(`pod name must be a DNS subdomain; received ${JSON.stringify(name)}`);
  }
}

/** "namespace/name", the key the lab API uses for pods. */
export function podKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

export function parsePodKey(key: string): { namespace: string; name: string } {
  const i = key.indexOf('/');
  if (i <= 0 || i === key.length - 1 || key.indexOf('/', i + 1) !== -1) {
    throw new LabNameError(`pod key must be "namespace/name"; received ${JSON.stringify(key)}`);
  }
  return { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** 10 base32 characters (50 bits) of sha256(text). */
export function shortHash(text: string, length = 10): string {
  const digest = createHash('sha256').update(text).digest();
  let out = '';
  let bits = 0;
  let acc = 0;
  for (const byte of digest) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5 && out.length < length) {
      out += BASE32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
    if (out.length >= length) break;
  }
  return out;
}

/** Every namespace of lab `lab` starts with this (and no other lab's does). */
export function labNetnsPrefix(lab: string): string {
  return `${NETNS_PREFIX}${validateLabName(lab)}.`;
}

export function switchNetns(lab: string): string {
  return `${labNetnsPrefix(lab)}sw`;
}

export function nodeNetnsName(lab: string, node: string): string {
  return `${labNetnsPrefix(lab)}n.${validateNodeName(node)}`;
}

export function podNetnsName(lab: string, key: string): string {
  const { namespace, name } = parsePodKey(key);
  return `${labNetnsPrefix(lab)}p.${shortHash(podKey(namespace, name))}`;
}

/** CNI_CONTAINERID for a pod: stable, unique per lab, recorded by host-local next to the IP. */
export function podContainerId(lab: string, key: string): string {
  return `pl-${lab}-${shortHash(key, 16)}`;
}

/** The switch-side veth of a node's uplink. */
export function switchPortName(node: string): string {
  const name = `v-${validateNodeName(node)}`;
  if (name.length > MAX_IFNAME) throw new LabNameError(`interface name too long: ${name}`);
  return name;
}

/** Which lab a namespace belongs to, or undefined when it is not a lab namespace. */
export function labOfNetns(netns: string): string | undefined {
  if (!netns.startsWith(NETNS_PREFIX)) return undefined;
  const dot = netns.indexOf('.', NETNS_PREFIX.length);
  if (dot < 0) return undefined;
  const lab = netns.slice(NETNS_PREFIX.length, dot);
  return LAB_NAME_RE.test(lab) && lab.length <= MAX_LAB_NAME ? lab : undefined;
}
