// The compiler's output: ipsets and iptables chains for one node, as plain data. This file is
// the whole contract between the compiler and the sync layer: the sync layer imports nothing
// else from src/compiler (test/architecture/purity.test.ts checks it), so everything it must
// know is data here: the types, the prefix that marks what we own (docs/design.md, invariant
// own-only-ours), and which sets are gates (`IpSet.gate`, invariant fail-closed-in-time).
//
// Rules are data (match, action, comment), as in Calico Felix: the sync layer renders them into
// restore text (src/sync/render.ts), diffs them against the kernel, and the test tracer executes
// the rendered text. Nothing here knows how it is applied.

/** What marks every kernel object we own: chains `PCTL-...`, ipsets `PCTL-...`. */
export const PREFIX = 'PCTL';
export const CHAIN_PREFIX = `${PREFIX}-`;
export const SET_PREFIX = `${PREFIX}-`;
/** NFLOG keeps a prefix of 64 bytes with its terminating NUL. */
export const DROP_LOG_PREFIX_MAX = 63;
/** iptables' limit on a chain name. */
export const MAX_CHAIN_NAME = 28;
/** ipset's limit on a set name. */
export const MAX_SET_NAME = 31;

/**
 * kube-proxy's mode on a node: where a pod's Service traffic is rewritten (iptables and nftables
 * DNAT it before FORWARD; IPVS takes it in at INPUT and sends it on through OUTPUT). Here because
 * the sync layer detects it and the compiler lays the node out by it (layout.ts ServiceProxy).
 */
export type ProxyMode = 'iptables' | 'nftables' | 'ipvs';
export const PROXY_MODES: readonly ProxyMode[] = ['iptables', 'nftables', 'ipvs'];

/** A chain name that stood for more than one content (src/compiler/collisions.ts). */
export interface NameCollision {
  readonly direction: 'Ingress' | 'Egress';
  /** The content-hashed chain name that stood for more than one content. */
  readonly name: string;
  /** The chain that drops everything, where the pods of every such content are sent instead. */
  readonly chain: string;
}

export type SetType = 'hash:ip' | 'hash:net' | 'hash:ip,port' | 'hash:net,net' | 'hash:ip,port,ip';

export interface SetMember {
  /** `10.0.0.1`, `10.0.0.0/8`, `10.0.0.1,tcp:8080`, `10.0.0.1,10.0.0.1`, `10.0.0.1,udp:40000,10.0.0.2` by set type. */
  readonly entry: string;
  /** hash:net only: the entry is an exception (ipBlock `except`). */
  readonly nomatch?: boolean;
}

export interface IpSet {
  readonly name: string;
  readonly type: SetType;
  /** Sorted by entry, no duplicates. */
  readonly members: readonly SetMember[];
  /** What the set holds, for humans (`policyctl compile -o json`, logs). */
  readonly purpose: string;
  /**
   * A gate (docs/design.md, invariant fail-closed-in-time): a set of addresses whose absence
   * drops (PCTL-programmed, the local pods this node enforces; PCTL-known, every pod it knows).
   * Whoever applies the Ruleset adds its members after every other change of the same apply is
   * in force, and removes them before anything else.
   */
  readonly gate?: true;
  /**
   * A set whose members are added at run time, by the agent (layout.ts REVOKED_SET) or by the
   * kernel's own rules (VERDICT_CACHE_SET), each expiring in the kernel after `timeout` seconds:
   * the Ruleset creates it (with that default timeout), empty, and whoever applies it never adds,
   * removes or compares its members.
   */
  readonly runtime?: RuntimeSet;
}

/** IpSet.runtime. */
export interface RuntimeSet {
  readonly timeout: number;
  /**
   * Its members are verdicts of the rules and sets in force (invariant *verdicts-of-the-rules-in-force*,
   * docs/design.md): whoever writes anything of ours to the kernel that may deny something empties
   * it right after, and once more a moment later (src/sync/syncer.ts, verdict-bearing.ts), so no
   * verdict outlives what decided it.
   */
  readonly flushOnChange?: true;
  /** At most this many members (ipset's maxelem): adds to a full set fail, silently for the kernel's rules. */
  readonly maxelem?: number;
}

/**
 * `src` / `dst` for single-dimension sets; `dst,dst` for hash:ip,port; `src,dst` for
 * hash:net,net; `dst,dst,src` or `src,dst,dst` for hash:ip,port,ip (the destination, its port,
 * the source; or the source, the destination's port, the destination).
 */
export type SetDirections = 'src' | 'dst' | 'dst,dst' | 'src,dst' | 'dst,dst,src' | 'src,dst,dst';

export interface SetMatch {
  readonly set: string;
  readonly dirs: SetDirections;
  readonly negate?: boolean;
}

export interface PortRange {
  readonly from: number;
  /** Inclusive; equal to `from` for a single port. */
  readonly to: number;
}

export type L4Protocol = 'tcp' | 'udp' | 'sctp';

export interface Match {
  readonly srcNet?: string;
  readonly dstNet?: string;
  readonly protocol?: L4Protocol;
  /** Only with `protocol`. Empty or absent: any port. At most 15 port slots (a range takes 2). */
  readonly dports?: readonly PortRange[];
  readonly sets?: readonly SetMatch[];
  /**
   * Only with `protocol: 'tcp'`. `true`: only a packet that opens a connection (SYN set; ACK,
   * RST and FIN clear: iptables' `--syn`); `false`: every other TCP packet (`! --syn`). Absent:
   * any.
   */
  readonly syn?: boolean;
  readonly ctstate?: readonly ('NEW' | 'ESTABLISHED' | 'RELATED' | 'INVALID')[];
  /**
   * What the node's own routing says the source (`src`) or destination (`dst`) address is
   * (iptables' `-m addrtype`, a route lookup): `LOCAL`, an address of this node, on any of its
   * interfaces (its InternalIP, the bridge's address, kube-ipvs0's Service addresses, loopback).
   * Both given: both must hold.
   */
  readonly addrType?: { readonly src?: AddrTypeTest; readonly dst?: AddrTypeTest };
}

/** One side of `-m addrtype`: the address is (`negate`: is not) of this type. */
export interface AddrTypeTest {
  readonly type: AddressType;
  readonly negate?: boolean;
}

/** The address types a rule tests (iptables' names; only those the layout uses). */
export type AddressType = 'LOCAL';

export type Action =
  | { readonly kind: 'return' }
  | { readonly kind: 'drop' }
  | { readonly kind: 'jump'; readonly chain: string }
  /** `-g`: RETURN (or the end) of the target chain returns to the caller of the current chain. */
  | { readonly kind: 'goto'; readonly chain: string }
  /**
   * Non-terminating: hand the packet's headers to the node's drop log (NFLOG) with this prefix
   * (at most DROP_LOG_PREFIX_MAX characters), rate-limited per node, and go on with the next
   * rule. Only ever placed right before a drop with the same match (src/compiler/drop-log.ts).
   */
  | { readonly kind: 'log'; readonly prefix: string }
  /**
   * Terminating: `-g chain`, the drop chain of this log prefix (src/compiler/drop-log.ts
   * dropChain), which logs the packet as `log` does and drops it. One rule where a conditional
   * drop written in place takes two (the log rule and the drop, each testing the match).
   */
  | { readonly kind: 'logdrop'; readonly chain: string; readonly prefix: string }
  /**
   * Non-terminating: add the packet's (source, destination port, destination) to a hash:ip,port,ip
   * set with this timeout, or renew the timeout of its entry (`-j SET --add-set NAME src,dst,dst
   * --exist --timeout N`), and go on with the next rule. Only the verdict cache's (layout.ts
   * VERDICT_CACHE_SET).
   */
  | { readonly kind: 'remember'; readonly set: string; readonly timeout: number };

export interface Rule {
  readonly match: Match;
  readonly action: Action;
  /** Says why the rule exists (policy and rule index); rendered as an iptables comment. */
  readonly comment: string;
}

export interface Chain {
  readonly name: string;
  readonly rules: readonly Rule[];
  /**
   * The rules match disjoint packets, so their order carries no meaning: the sync layer compares
   * the chain's rules as a set and may change it by appending and deleting single rules instead
   * of rewriting it (a rewrite flushes the chain).
   */
  readonly unordered?: true;
}

/**
 * A jump from a chain we do not own (a built-in chain) into ours. Invariant: it is the only
 * kind of rule we place in a foreign chain, it is always at position 1, and its comment marks
 * it as ours.
 */
export interface Hook {
  readonly table: 'filter';
  /** OUTPUT only under kube-proxy's IPVS mode (layout.ts). */
  readonly chain: 'FORWARD' | 'INPUT' | 'OUTPUT';
  readonly target: string;
  readonly comment: string;
}

export interface Ruleset {
  readonly node: string;
  /** Sorted by name. Every set a rule references is here. */
  readonly sets: readonly IpSet[];
  /**
   * Dependency order is not required. The layout's chains first, in the layout's order
   * (src/compiler/layout.ts), then the policy chains sorted by name.
   */
  readonly chains: readonly Chain[];
  readonly hooks: readonly Hook[];
  /**
   * Chain names that stood for more than one content (never expected: names carry 105 bits of
   * SHA-256). Absent when there are none. Their pods are isolated by a drop-all chain instead
   * (collisions.ts); whoever applies the Ruleset reports these as errors.
   */
  readonly collisions?: readonly NameCollision[];
}

/**
 * What changed between two successive Rulesets of the incremental compiler, in terms of the
 * kernel objects: a sync layer that applied the previous Ruleset can apply this instead of
 * diffing the whole Ruleset (invariant cost-proportional). Hooks never change.
 */
export interface RulesetDelta {
  /** Sets new in this Ruleset, with all their members. */
  readonly createdSets: readonly IpSet[];
  /** Sets of the previous Ruleset that are gone. */
  readonly destroyedSets: readonly string[];
  /** Sets in both, same object lineage: the entries added and removed (each set at most once). */
  readonly memberChanges: readonly MemberChange[];
  /** Sets in both that were dropped and rebuilt in between: compare their members whole. */
  readonly rebuiltSets: readonly { readonly before: IpSet; readonly after: IpSet }[];
  /** Chains new in this Ruleset or with different rules (their object differs from the previous one's). */
  readonly writtenChains: readonly Chain[];
  /** Chains of the previous Ruleset that are gone. */
  readonly removedChains: readonly string[];
}

export interface MemberChange {
  readonly set: string;
  readonly added: readonly string[];
  readonly removed: readonly string[];
  /** The set is the gate (IpSet.gate). */
  readonly gate?: true;
}
