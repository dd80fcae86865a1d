#!/usr/bin/env node
// Entry point for `npx policyctl`. Node 24 runs the TypeScript sources directly (type stripping),
// so there is no build step between a checkout and a working CLI.
import { tuneV8 } from '../src/cli/v8-tuning.ts';

tuneV8(); // before the rest of the program is loaded and allocates
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
