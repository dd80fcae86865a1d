// What the node's CNI plugin told the agent about its pods' sandboxes, as a model adjuster.
//
// The API learns a pod's address from kubelet's status report, seconds after the sandbox has
// it; the CNI plugin tells the agent at once (ADD). Until the API agrees, the address the plugin
// reported is authoritative for that pod: the adjuster gives the pod record those addresses
// (and this node's name, when the record has none yet), so the pod is enforceable as soon as
// its sandbox exists. After DEL the sandbox's addresses are gone: the pod record loses them even
// while the API still reports them, so the next owner of an address inherits nothing.
//
// Invariants:
// - The adjuster is pure: it reads this object's state and returns its argument itself when it
//   changes nothing. State changes (`added`, `deleted`, `sourceChanged`) say which pod to
//   readjust.
// - An entry belongs to one pod object (its UID, once known): a pod recreated under the same
//   name is not given the old sandbox's addresses.
// - A DEL never strips the addresses of a newer sandbox of the same pod (a runtime may tear down
//   an old sandbox after the new one is up).
// - The source is authoritative again once it reports exactly the running sandbox's addresses
//   (the sandbox stays known, for a DEL without prevResult). Entries go when the pod leaves
//   the source. Gone addresses stay withheld as long as the pod is in the source (a late status
//   report may still carry one), unless a new sandbox of the pod gets one of them again.

import type { ObjectRecord, PodRecord } from './types.ts';

export interface Sandbox {
  readonly containerId: string;
  readonly ips: readonly string[];
}

export interface RunningSandbox extends Sandbox {
  /** The source has reported exactly these addresses: from then on its record is authoritative. */
  readonly agreed: boolean;
}

export interface PodOverlay {
  /** The pod object the entry belongs to; undefined until known. */
  readonly uid?: string;
  /** The running sandbox as ADD reported it: its addresses are authoritative until the source agrees; kept for DEL. */
  readonly current?: RunningSandbox;
  /** Addresses of sandboxes torn down by DEL, withheld from the pod while the source reports them. */
  readonly gone: readonly string[];
}

const key = (namespace: string, name: string) => `${namespace}/${name}`;
const sameList = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

export class CniOverlay {
  private readonly pods = new Map<string, PodOverlay>();
  private readonly node: string;

  constructor(node: string) {
    this.node = node;
  }

  /** The model adjuster (`model.addAdjuster(overlay.adjuster)`). */
  readonly adjuster = (r: ObjectRecord): ObjectRecord => {
    if (r.kind !== 'Pod' || this.pods.size === 0) return r;
    const e = this.pods.get(key(r.namespace, r.name));
    if (!e || (e.uid !== undefined && e.uid !== r.uid)) return r;
    return applyOverlay(r, e, this.node);
  };

  get(namespace: string, name: string): PodOverlay | undefined {
    return this.pods.get(key(namespace, name));
  }

  /** Entries, for status and tests. */
  entries(): [string, PodOverlay][] {
    return [...this.pods];
  }

  /** ADD: this sandbox, with these addresses, is the pod's. */
  added(namespace: string, name: string, uid: string, sandbox: Sandbox): void {
    const k = key(namespace, name);
    const prev = this.pods.get(k);
    const gone = prev && prev.uid === uid ? prev.gone.filter((ip) => !sandbox.ips.includes(ip)) : [];
    this.pods.set(k, { uid, current: { containerId: sandbox.containerId, ips: [...sandbox.ips], agreed: false }, gone });
  }

  /**
   * DEL of a sandbox: returns the addresses that leave the pod (the sandbox's as ADD reported
   * them, and those DEL reports, never a newer sandbox's). `uid` is the pod object's, when
   * the model has it: an entry is kept only for a pod the model holds.
   */
  deleted(namespace: string, name: string, containerId: string, reported: readonly string[], uid: string | undefined): string[] {
    const k = key(namespace, name);
    const prev = this.pods.get(k);
    let current = prev?.current;
    let gone = [...reported];
    if (current && current.containerId === containerId) {
      for (const ip of current.ips) if (!gone.includes(ip)) gone.push(ip);
      current = undefined;
    } else if (current) {
      gone = gone.filter((ip) => !current!.ips.includes(ip));
    }
    const allGone = [...(prev?.gone ?? [])];
    for (const ip of gone) if (!allGone.includes(ip)) allGone.push(ip);
    const owner = prev?.uid ?? uid;
    if (!current && (allGone.length === 0 || owner === undefined)) this.pods.delete(k);
    else this.pods.set(k, { ...(owner !== undefined ? { uid: owner } : {}), ...(current ? { current } : {}), gone: allGone });
    return gone;
  }

  /** The pod whose sandbox this is, when DEL does not name the pod. */
  findContainer(containerId: string): { namespace: string; name: string } | undefined {
    for (const [k, e] of this.pods) {
      if (e.current?.containerId === containerId) {
        const i = k.indexOf('/');
        return { namespace: k.slice(0, i), name: k.slice(i + 1) };
      }
    }
    return undefined;
  }

  /** Forget a pod (an ADD that failed: the runtime tears the sandbox down and retries). */
  forget(namespace: string, name: string, containerId: string): void {
    const k = key(namespace, name);
    const e = this.pods.get(k);
    if (!e || e.current?.containerId !== containerId) return;
    if (e.gone.length === 0) this.pods.delete(k);
    else this.pods.set(k, { ...(e.uid !== undefined ? { uid: e.uid } : {}), gone: e.gone });
  }

  /**
   * The source's record of a pod changed (`source` undefined: it left the source). Drops what
   * the source has caught up with; the adjusted result is the same either way, so nothing
   * needs readjusting.
   */
  sourceChanged(namespace: string, name: string, uid: string, source: PodRecord | undefined): void {
    const k = key(namespace, name);
    const e = this.pods.get(k);
    if (!e || (e.uid !== undefined && e.uid !== uid)) return;
    if (!source) {
      this.pods.delete(k);
      return;
    }
    // The API agrees with the running sandbox: from now on its record is authoritative (the
    // result is the same now); the sandbox stays known for its DEL.
    if (!e.current || e.current.agreed || !sameList(source.ips, e.current.ips) || source.nodeName === undefined) return;
    this.pods.set(k, { ...e, current: { ...e.current, agreed: true } });
  }
}

function applyOverlay(r: PodRecord, e: PodOverlay, node: string): PodRecord {
  let ips = r.ips;
  let nodeName = r.nodeName;
  if (e.current && !e.current.agreed) {
    ips = e.current.ips;
    nodeName ??= node;
  } else if (e.gone.length > 0 && r.ips.some((ip) => e.gone.includes(ip))) {
    ips = r.ips.filter((ip) => !e.gone.includes(ip));
  }
  if (sameList(ips, r.ips) && nodeName === r.nodeName) return r;
  return { ...r, ips: [...ips], ...(nodeName !== undefined ? { nodeName } : {}) };
}
