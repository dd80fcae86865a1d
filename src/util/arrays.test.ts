import { describe, expect, it } from 'vitest';
import { append } from './arrays.ts';

describe('append', () => {
  it('appends in order, and takes more elements than a call can take as arguments', () => {
    expect(append([1, 2], [3, 4])).toEqual([1, 2, 3, 4]);
    const big = Array.from({ length: 500_000 }, (_, i) => i);
    expect(() => [0].push(...big)).toThrow(RangeError);
    const out = append([-1], big);
    expect(out).toHaveLength(500_001);
    expect(out[500_000]).toBe(499_999);
  });
});
