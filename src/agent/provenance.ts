// Which model objects a piece of the node's Ruleset comes from: the pods whose addresses are set
// entries, the policies whose rules are in a chain. Used when the kernel refuses a piece
// (src/sync/pieces.ts): the objects responsible are quarantined (src/agent/quarantine.ts).
//
// Computed from the model and the Ruleset the compiler produced from it, on demand (only after
// a refusal), with the compiler's own builders: a policy chain's rules are matched to the policy
// that produced them by rule id (each policy's rules are rebuilt alone with its tier's `policyRules`; they are
// the same rules, comment and all, as in the shared chain), so nothing depends on parsing a
// comment except the rule index in the reported field, which is a best effort.
//
// What owns what:
// - an entry of a pod-address set (hash:ip: peer pods, dispatch, programmed; hash:ip,port: named
//   ports): the enforceable pods with that address (the field reported is the address's, the
//   refused entry is in the rejection's line);
// - an entry of an ipBlock set (hash:net), or a set itself: the policies whose rules match the set
//   (a dispatch set: the owners of the chain it dispatches to);
// - a rule of a policy chain: the policy that produced it; a dispatch rule: the owners of the
//   chain it goes to; a chain refused whole: the policies that put rules in it;
// - when those policies are already quarantined (their chain holds nothing but the final DROP and
//   the kernel still refuses it), the local pods dispatched to it: quarantined, they get no
//   address, so the node's gate (PCTL-programmed) drops their new connections. Fail closed even
//   then, and the chain leaves the Ruleset.
// - the top chains, the hooks, the programmed set itself, the drop chain of unknown addresses
//   and the sets PCTL-pod-cidrs and PCTL-known themselves (shared by every Deny or Pass that
//   names pods; a Node's pod CIDR the model refuses never gets there): nothing (not one object's
//   doing).

import type { CompileOptions } from '../compiler/compile.ts';
import { DIRECTIONS, DISPATCH_CHAINS, KNOWN_PODS_SPEC, POD_CIDRS_SET, WIDE_CHAINS, nodePodCidrs } from '../compiler/layout.ts';
import { dropChain, parseDropLogPrefix } from '../compiler/drop-log.ts';
import { blockSetSpec, clusterPolicyRules, namedPortSetSpec, podSetSpec, unknownPodAddressMatches, type SetSource } from '../compiler/rules.ts';
import { PodSelection, SharedAdminPrefix, selectTiers, tierChains, type TierPolicy } from '../compiler/tiers.ts';
import { renderRule, ruleId } from '../sync/render.ts';
import type { Chain, Rule, Ruleset } from '../compiler/ruleset.ts';
import type { Model } from '../model/store.ts';
import { isEnforceable, refOf, type PodRecord, type PolicyType } from '../model/types.ts';
import { entryAddress, type Piece } from '../sync/pieces.ts';

/** A model object held responsible for a refused piece, and the field of it that produced the piece. */
export interface Culprit {
  readonly kind: 'Pod' | 'NetworkPolicy' | 'ClusterNetworkPolicy';
  readonly uid: string;
  /** `pod/NS/NAME`, `networkpolicy/NS/NAME`, `clusternetworkpolicy/NAME`. */
  readonly ref: string;
  /** `status.podIP`, `status.podIPs[1]`, `spec.ingress[0]`, ... */
  readonly field: string;
  /** The value of that field the kernel saw (unquoted; quote it to print). */
  readonly value: string;
}

export const culpritKey = (c: Pick<Culprit, 'kind' | 'uid'>): string => `${c.kind}|${c.uid}`;

/**
 * The sets every Deny or Pass that names pods matches (the unknown-address drops): a refusal of
 * one is no policy's doing (an entry of PCTL-known is still its pods').
 */
const SHARED_SETS: ReadonlySet<string> = new Set([POD_CIDRS_SET, KNOWN_PODS_SPEC.name]);

/** Set names only: the compiler's naming, without building sets. */
const NAMES: SetSource = {
  podSet: (peer) => podSetSpec(peer).name,
  namedPortSet: (peer, port, protocol) => namedPortSetSpec(peer, port, protocol).name,
  blockSet: (b) => blockSetSpec(b).name,
  netSet: (spec) => spec.name,
  unknownPodAddress: (side) => unknownPodAddressMatches(side, POD_CIDRS_SET, KNOWN_PODS_SPEC.name),
};

interface PolicyChain {
  readonly dir: PolicyType;
  /** rule id -> the policy that produced the rule (the final DROP belongs to none). */
  readonly byRule: Map<string, TierPolicy>;
  /** The local pods whose packets go through the chain. */
  readonly pods: PodRecord[];
}

export class Provenance {
  private readonly model: Model;
  private readonly node: string;
  private readonly desired: Ruleset;
  private byAddress: Map<string, PodRecord[]> | undefined;
  private policyChains: Map<string, PolicyChain> | undefined;
  private chains: Map<string, Chain> | undefined;
  private setUsers: Map<string, { chain: string; rule: Rule }[]> | undefined;

  private readonly opts: CompileOptions;

  /** `opts`: what the Ruleset was compiled with (the chains are named as the compiler named them). */
  constructor(model: Model, node: string, desired: Ruleset, opts: CompileOptions = {}) {
    this.model = model;
    this.node = node;
    this.desired = desired;
    this.opts = opts;
  }

  /**
   * The objects responsible for a piece: `line` is the payload line the kernel named, if any;
   * `quarantined` says which objects already are (see the file comment: a chain whose policies
   * are all quarantined falls to its pods). Empty when no single object is responsible.
   */
  owners(piece: Piece, line?: string, quarantined: (key: string) => boolean = () => false): Culprit[] {
    switch (piece.kind) {
      case 'member':
        if (SHARED_SETS.has(piece.set) && piece.setType === 'hash:net') return [];
        if (piece.setType === 'hash:net') return this.ofSet(piece.set, quarantined).map((c) => ({ ...c, value: piece.entry }));
        return this.ofAddress(piece.setType, piece.entry);
      case 'set':
        return SHARED_SETS.has(piece.set) ? [] : this.ofSet(piece.set, quarantined);
      case 'chain': {
        const rule = line !== undefined ? piece.chain.rules.find((r) => renderRule(piece.chain.name, r) === line) : undefined;
        return rule ? this.ofRule(piece.chain.name, rule, quarantined) : this.ofChain(piece.chain.name, quarantined);
      }
      case 'append':
        return this.ofRule(piece.chain, piece.rule, quarantined);
      case 'hooks':
        return [];
    }
  }

  /** The enforceable pods with the address of a set entry. */
  private ofAddress(setType: string, entry: string): Culprit[] {
    if (!this.byAddress) {
      this.byAddress = new Map();
      for (const p of this.model.allPods()) {
        if (!isEnforceable(p)) continue;
        for (const ip of p.ips) {
          const l = this.byAddress.get(ip);
          if (l) l.push(p);
          else this.byAddress.set(ip, [p]);
        }
      }
    }
    const ip = entryAddress(setType, entry);
    return (this.byAddress.get(ip) ?? []).map((p) => {
      const i = p.ips.indexOf(ip);
      return { kind: 'Pod', uid: p.uid, ref: refOf(p), field: i === 0 ? 'status.podIP' : `status.podIPs[${i}]`, value: ip };
    });
  }

  private ofSet(set: string, quarantined: (key: string) => boolean): Culprit[] {
    this.index();
    return dedupe((this.setUsers!.get(set) ?? []).flatMap((u) => this.ofRule(u.chain, u.rule, quarantined)));
  }

  private ofRule(chain: string, rule: Rule, quarantined: (key: string) => boolean): Culprit[] {
    this.index();
    const pc = this.policyChains!.get(chain);
    if (pc) {
      const pol = pc.byRule.get(ruleId(rule));
      if (pol && !quarantined(culpritKey(pol))) return [policyCulprit(pol, pc.dir, rule, renderRule(chain, rule))];
      return this.ofChain(chain, quarantined);
    }
    // A dispatch rule: the chain it goes to.
    const a = rule.action;
    if ((a.kind === 'goto' || a.kind === 'jump') && this.policyChains!.has(a.chain)) return this.ofChain(a.chain, quarantined);
    return [];
  }

  private ofChain(chain: string, quarantined: (key: string) => boolean): Culprit[] {
    this.index();
    const pc = this.policyChains!.get(chain);
    if (!pc) return [];
    const rules = this.chains!.get(chain)?.rules ?? [];
    const out: Culprit[] = [];
    for (const r of rules) {
      const pol = pc.byRule.get(ruleId(r));
      if (pol && !quarantined(culpritKey(pol))) out.push(policyCulprit(pol, pc.dir, r, renderRule(chain, r)));
    }
    if (out.length > 0) return dedupe(out);
    return pc.pods
      .filter((p) => !quarantined(culpritKey(p)))
      .map((p) => ({ kind: 'Pod', uid: p.uid, ref: refOf(p), field: 'metadata.labels', value: `${JSON.stringify(p.labels)} (its ${pc.dir.toLowerCase()} chain ${chain} is refused)` }));
  }

  /** Policy chains of the local pods (as the compiler names them), and the users of each set. */
  private index(): void {
    if (this.policyChains) return;
    this.policyChains = new Map();
    this.chains = new Map(this.desired.chains.map((c) => [c.name, c]));
    // The shared Admin prefix's chain (layout.ts WIDE_CHAINS): its policies' rules; the pods the gate sends through it.
    const prefix = new SharedAdminPrefix(this.model, nodePodCidrs(this.model, this.node, this.opts.podCidrs));
    const local = [...this.model.podsOnNode(this.node)].filter(isEnforceable);
    for (const dir of DIRECTIONS) {
      if (prefix.policies[dir].length === 0) continue;
      const byRule = new Map<string, TierPolicy>();
      for (const c of prefix.policies[dir]) for (const r of clusterPolicyRules(NAMES, dir, c, DISPATCH_CHAINS.entry[dir], 'inline')) byRule.set(ruleId(r), c);
      this.policyChains.set(WIDE_CHAINS[dir].rules, { dir, byRule, pods: local.filter((p) => prefix.gates(p)) });
    }
    for (const pod of local) {
      const selection = new PodSelection(this.model, pod, prefix.forPod(pod));
      for (const dir of DIRECTIONS) {
        const t = tierChains(NAMES, pod, dir, selectTiers(this.model, pod, dir, selection), undefined, this.opts.tiers);
        for (const tc of [...t.entry, ...t.next]) {
          let pc = this.policyChains.get(tc.chain.name);
          if (!pc) {
            pc = { dir, byRule: new Map(), pods: [] };
            for (const pol of tc.policies) {
              for (const r of tc.tier.policyRules(NAMES, pod, dir, pol, tc.next)) {
                pc.byRule.set(ruleId(r), pol);
                // A Deny's drop chain (drop-log.ts chainedDrop) is its policy's: one prefix, one rule
                // of one policy. The drop chain of unknown addresses (a Deny or Pass that names pods,
                // rules.ts) is every such rule's on the node: not one object's doing.
                if (r.action.kind === 'logdrop' && parseDropLogPrefix(r.action.prefix)?.kind === 'cnp' && !this.policyChains.has(r.action.chain)) {
                  const drops = dropChain(r.action.prefix);
                  this.policyChains.set(drops.name, { dir, byRule: new Map(drops.rules.map((d) => [ruleId(d), pol])), pods: [] });
                }
              }
            }
            this.policyChains.set(tc.chain.name, pc);
          }
          pc.pods.push(pod);
        }
      }
    }
    this.setUsers = new Map();
    for (const c of this.desired.chains) {
      for (const rule of c.rules) {
        for (const m of rule.match.sets ?? []) {
          const l = this.setUsers.get(m.set);
          if (l) l.push({ chain: c.name, rule });
          else this.setUsers.set(m.set, [{ chain: c.name, rule }]);
        }
      }
    }
  }
}

function policyCulprit(pol: TierPolicy, dir: PolicyType, rule: Rule, line: string): Culprit {
  // The compiler's comment names the rule (`ns/name ingress[2]`); without it, the section.
  const m = /\b(ingress|egress)\[(\d+)\]$/.exec(rule.comment);
  // A drop chain's rules name their Deny rule by the log prefix (drop-log.ts dropChain).
  const d = /^(?:log: )?drop: (.*)$/.exec(rule.comment);
  const cause = d ? parseDropLogPrefix(d[1]!) : undefined;
  const field = m ? `spec.${m[1]}[${m[2]}]` : cause?.kind === 'cnp' ? `spec.${cause.dir.toLowerCase()}[${cause.index}]` : `spec.${dir.toLowerCase()}`;
  return { kind: pol.kind, uid: pol.uid, ref: refOf(pol), field, value: line };
}

function dedupe(cs: Culprit[]): Culprit[] {
  const seen = new Set<string>();
  return cs.filter((c) => {
    const k = culpritKey(c);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
