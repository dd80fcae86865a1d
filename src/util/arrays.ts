// Appending one array to another without spreading it into arguments: `a.push(...b)` passes b's
// elements as call arguments, and V8 throws "Maximum call stack size exceeded" beyond about a
// hundred thousand of them. A tenant can make a policy expand that far (many peers times many
// ports), so the compiler and the sync layer never spread what a cluster can make large.

/** Append `items` to `into`, in order; returns `into`. */
export function append<T>(into: T[], items: Iterable<T>): T[] {
  for (const x of items) into.push(x);
  return into;
}
