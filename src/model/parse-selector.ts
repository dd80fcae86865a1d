// metav1.LabelSelector as written in a manifest -> `Selector`, validated like the API server
// (apimachinery ValidateLabelSelector): label key and value syntax, known operators, values
// required for In/NotIn and forbidden for Exists/DoesNotExist.

import { type IssueList, childPath, indexPath, isAbsent, isObject, keyPath } from './issues.ts';
import type { Requirement, Selector, SelectorOperator } from './types.ts';
import { labelKeyErrors, labelValueErrors } from './validation.ts';

const OPERATORS: readonly SelectorOperator[] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];

export interface ParsedSelector {
  readonly selector: Selector;
  /** False when any issue was found inside the selector: callers must not trust `selector`. */
  readonly ok: boolean;
}

/** Parse a present (non-null) selector at `path`. Issues go to `issues`. */
export function parseSelector(v: unknown, path: string, issues: IssueList): ParsedSelector {
  const before = issues.count;
  const requirements: Requirement[] = [];
  if (!isObject(v)) {
    issues.add(path, v, 'must be a label selector (an object with matchLabels and/or matchExpressions)');
    return { selector: { requirements }, ok: false };
  }
  issues.unknownFields(path, v, ['matchLabels', 'matchExpressions']);

  const ml = v['matchLabels'];
  const mlPath = childPath(path, 'matchLabels');
  if (!isAbsent(ml)) {
    if (!isObject(ml)) issues.add(mlPath, ml, 'must be a map of label keys to values');
    else {
      for (const [key, value] of Object.entries(ml)) {
        for (const m of labelKeyErrors(key)) issues.add(mlPath, key, `invalid label key: ${m}`);
        if (typeof value !== 'string') {
          issues.add(keyPath(mlPath, key), value, 'label value must be a string (quote it in YAML)');
          continue;
        }
        for (const m of labelValueErrors(value)) issues.add(keyPath(mlPath, key), value, `invalid label value: ${m}`);
        requirements.push({ key, operator: 'In', values: [value], origin: 'matchLabels' });
      }
    }
  }

  const me = v['matchExpressions'];
  const mePath = childPath(path, 'matchExpressions');
  if (!isAbsent(me)) {
    if (!Array.isArray(me)) issues.add(mePath, me, 'must be a list of requirements');
    else me.forEach((expr, i) => {
      const r = parseRequirement(expr, indexPath(mePath, i), `matchExpressions[${i}]`, issues);
      if (r) requirements.push(r);
    });
  }
  return { selector: { requirements }, ok: issues.count === before };
}

function parseRequirement(v: unknown, path: string, origin: string, issues: IssueList): Requirement | undefined {
  if (!isObject(v)) {
    issues.add(path, v, 'must be an object with key, operator and values');
    return undefined;
  }
  issues.unknownFields(path, v, ['key', 'operator', 'values']);
  const before = issues.count;

  const key = v['key'];
  if (typeof key !== 'string') issues.add(childPath(path, 'key'), key, isAbsent(key) ? 'required field is missing' : 'must be a string');
  else for (const m of labelKeyErrors(key)) issues.add(childPath(path, 'key'), key, `invalid label key: ${m}`);

  const op = v['operator'];
  const operator = OPERATORS.find((o) => o === op);
  if (!operator) {
    issues.add(childPath(path, 'operator'), op, isAbsent(op) ? 'required field is missing' : `not a valid selector operator: must be one of ${OPERATORS.join(', ')}`);
  }

  const valuesPath = childPath(path, 'values');
  const raw = v['values'];
  const values: string[] = [];
  if (!isAbsent(raw)) {
    if (!Array.isArray(raw)) issues.add(valuesPath, raw, 'must be a list of strings');
    else raw.forEach((x, j) => {
      if (typeof x !== 'string') issues.add(indexPath(valuesPath, j), x, 'must be a string (quote it in YAML)');
      else {
        for (const m of labelValueErrors(x)) issues.add(indexPath(valuesPath, j), x, `invalid label value: ${m}`);
        values.push(x);
      }
    });
  }
  const count = Array.isArray(raw) ? raw.length : 0;
  if ((operator === 'In' || operator === 'NotIn') && count === 0) {
    issues.add(valuesPath, raw, `must be specified (non-empty) when operator is ${operator}`);
  }
  if ((operator === 'Exists' || operator === 'DoesNotExist') && count > 0) {
    issues.add(valuesPath, raw, `may not be specified when operator is ${operator}`);
  }
  if (issues.count !== before || !operator || typeof key !== 'string') return undefined;
  return { key, operator, values, origin };
}
