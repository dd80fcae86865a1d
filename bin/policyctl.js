#!/usr/bin/env node
// Entry point for `npx policyctl`. Node 24 runs the TypeScript sources directly (type stripping),
// so there is no build step between a checkout and a working CLI.
import module from 'node:module';

// V8's code cache and the stripped TypeScript of every module, kept across runs: a warm start
// neither strips types again nor loads the type stripper, which is 20 to 35 MB of the agent's
// resident memory (README "Performance"). Enabled before the first TypeScript module is
// imported. NODE_COMPILE_CACHE names another folder; where the folder cannot be written (a
// read-only image whose cache was not warmed at build) this does nothing.
if (!process.env.NODE_COMPILE_CACHE) module.enableCompileCache?.(new URL('../node_modules/.cache/policyctl-compile', import.meta.url).pathname);
const { tuneV8 } = await import('../src/cli/v8-tuning.ts');
tuneV8(); // before the rest of the program is loaded and allocates
const { main } = await import('../src/cli/main.ts');
module.flushCompileCache?.(); // now, not only at exit: an agent may end by SIGKILL
process.exitCode = await main(process.argv.slice(2));
