// Label selector matching, with a per-requirement account for explanations.
//
// Semantics from the API reference (metav1.LabelSelector): requirements are ANDed; an empty
// selector matches everything; `NotIn` and `DoesNotExist` match objects that lack the key.

import type { Labels, Requirement, Selector } from './types.ts';

export const EVERYTHING: Selector = { requirements: [] };

export function requirementMatches(req: Requirement, labels: Labels): boolean {
  const has = Object.prototype.hasOwnProperty.call(labels, req.key);
  switch (req.operator) {
    case 'In':
      return has && req.values.includes(labels[req.key]!);
    case 'NotIn':
      return !has || !req.values.includes(labels[req.key]!);
    case 'Exists':
      return has;
    case 'DoesNotExist':
      return !has;
  }
}

export function selectorMatches(sel: Selector, labels: Labels): boolean {
  for (const req of sel.requirements) if (!requirementMatches(req, labels)) return false;
  return true;
}

export interface RequirementResult {
  readonly requirement: string;
  readonly origin: string;
  readonly matched: boolean;
  /** What the object has under the key: its value, or `absent`. */
  readonly actual: string;
}

/** Evaluate every requirement (no short cut) so an explanation can list each one. */
export function explainSelector(sel: Selector, labels: Labels): RequirementResult[] {
  return sel.requirements.map((req) => ({
    requirement: formatRequirement(req),
    origin: req.origin,
    matched: requirementMatches(req, labels),
    actual: Object.prototype.hasOwnProperty.call(labels, req.key) ? `${req.key}=${labels[req.key]}` : `${req.key} absent`,
  }));
}

export function formatRequirement(req: Requirement): string {
  switch (req.operator) {
    case 'In':
      return req.values.length === 1 && req.origin === 'matchLabels'
        ? `${req.key}=${req.values[0]}`
        : `${req.key} in (${req.values.join(',')})`;
    case 'NotIn':
      return `${req.key} notin (${req.values.join(',')})`;
    case 'Exists':
      return req.key;
    case 'DoesNotExist':
      return `!${req.key}`;
  }
}

/** kubectl's selector notation; `<all>` for the empty selector, as kubectl describe prints. */
export function formatSelector(sel: Selector): string {
  if (sel.requirements.length === 0) return '<all>';
  return sel.requirements.map(formatRequirement).join(',');
}

/**
 * A canonical key: equal keys mean the selectors select the same objects on any labels. Used
 * to share ipsets between policies with the same selector (requirements sorted, values sorted
 * and deduplicated; matchLabels and `In` with one value are the same requirement).
 */
export function selectorKey(sel: Selector): string {
  const parts = sel.requirements.map((r) => {
    const values = [...new Set(r.values)].sort();
    return `${r.key}\u0000${r.operator}\u0000${values.join('\u0001')}`;
  });
  return [...new Set(parts)].sort().join('\u0002');
}
