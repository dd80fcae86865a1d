// Where the CLI writes, injectable so tests run commands in-process and read their output.

export interface Io {
  out(text: string): void;
  err(text: string): void;
  readStdin(): Promise<string>;
}

export const processIo: Io = {
  out: (t) => void process.stdout.write(t),
  err: (t) => void process.stderr.write(t),
  readStdin: async () => {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  },
};

/** Exit codes, documented in `policyctl --help`. */
export const EXIT = {
  ok: 0,
  /** The command ran and found a problem: an object not found, a file not readable. */
  failure: 1,
  /** Bad flags or arguments. */
  usage: 2,
  /** With --strict: some manifest object was invalid (the rest was still used). */
  invalidInput: 3,
  /** `lab probe --expect` (and similar checks): the result differs from the expectation. */
  mismatch: 4,
} as const;

export class CliError extends Error {
  readonly code: number;
  constructor(message: string, code: number = EXIT.failure) {
    super(message);
    this.code = code;
  }
}
