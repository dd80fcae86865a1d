// A lab's state file: <stateDir>/<lab>/lab.json, written atomically after every change, so
// `policyctl lab list/probe/down` and agents work from other processes. The kernel objects can
// also be found without it (names.ts), which is how `down` cleans up after a lost state file.

import { mkdir, readFile, readdir, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { LabProtocol, LabService } from './rules.ts';
import { validateLabName } from './names.ts';

export const DEFAULT_STATE_DIR = '/run/policyctl-lab';
export const STATE_FILE = 'lab.json';
export const STATE_VERSION = 1;

/** The state root: `opts.stateDir`, else $POLICYCTL_LAB_STATE_DIR, else /run/policyctl-lab. */
export function stateRoot(stateDir?: string): string {
  return resolve(stateDir ?? process.env['POLICYCTL_LAB_STATE_DIR'] ?? DEFAULT_STATE_DIR);
}

export function labDir(name: string, stateDir?: string): string {
  return join(stateRoot(stateDir), validateLabName(name));
}

export interface LabPort {
  port: number;
  protocol: LabProtocol;
}

export interface LabNode {
  name: string;
  podCIDR: string;
  /** Underlay address (eth0), e.g. 192.168.50.11. */
  ip: string;
  /** The cni0 address, the first address of podCIDR. */
  gateway: string;
  netns: string;
  /** The node agent's CNI socket, when the node's conflist chains policyctl-cni after bridge. */
  cniSocket?: string;
  /** IPVS-path mode: pid of the node's transparent proxy (ipvs-proxy.py), while it serves a Service. */
  ipvsProxyPid?: number;
}

export interface LabPod {
  /** "namespace/name". */
  key: string;
  namespace: string;
  name: string;
  node: string;
  ip: string;
  /** Every declared port, SCTP included. */
  ports: LabPort[];
  /** Declared ports without a server (SCTP: this kernel has none). */
  unserved: LabPort[];
  netns: string;
  containerId: string;
  /** Pid of the server process, when the pod serves any port. */
  serverPid?: number;
  /** When (epoch ms) its namespace was created, its network came up (bridge ADD returned), and the whole CNI ADD returned. */
  timeline?: { created: number; networkUp?: number; added?: number };
  /** Attached by hand (no policyctl-cni): the folder watcher leaves it alone. */
  unmanaged?: boolean;
}

export interface LabExternal {
  /** The switch namespace's own address on the underlay: a host outside the cluster. */
  ip: string;
  ports: LabPort[];
  serverPid?: number;
}

export interface LabState {
  version: number;
  name: string;
  /** This lab's directory (state file, CNI configs, IPAM data, server logs). */
  dir: string;
  createdAt: string;
  clusterCIDR: string;
  underlayCIDR: string;
  switch: { netns: string; bridge: string };
  external: LabExternal;
  nodes: LabNode[];
  pods: LabPod[];
  services: LabService[];
  /** policyctl-cni's timeoutSeconds in the nodes' conflists (nodes with a cniSocket). */
  cniTimeoutSeconds?: number;
  /**
   * `ipvs`: Services take kube-proxy IPVS mode's netfilter path (VIPs on kube-ipvs0, a
   * transparent proxy, src/lab/ipvs-proxy.py) instead of iptables-mode DNAT (absent).
   */
  serviceProxy?: 'ipvs';
}

export async function saveState(state: LabState): Promise<void> {
  await mkdir(state.dir, { recursive: true });
  const file = join(state.dir, STATE_FILE);
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(tmp, JSON.stringify(state, null, 2) + '\n');
  await rename(tmp, file);
}

/** The lab's state, or undefined when it has no state file. */
export async function loadState(name: string, stateDir?: string): Promise<LabState | undefined> {
  const file = join(labDir(name, stateDir), STATE_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const state = JSON.parse(text) as LabState;
  if (state.version !== STATE_VERSION || state.name !== name) {
    throw new Error(`${file}: not a version ${STATE_VERSION} state file of lab ${JSON.stringify(name)}`);
  }
  return state;
}

/** Lab names that have a directory under the state root. */
export async function stateLabNames(stateDir?: string): Promise<string[]> {
  try {
    const entries = await readdir(stateRoot(stateDir), { withFileTypes: true });
    return entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
