#!/usr/bin/env node
// policyctl-cni, the chained CNI plugin (src/cni/plugin.ts): the container runtime runs it on
// every pod ADD and DEL, so it starts lean: Node's compile cache (in the OS temp folder, or
// NODE_COMPILE_CACHE) spares the TypeScript stripping after the first run, and the plugin
// imports node:net and node:fs only.
import module from 'node:module';

module.enableCompileCache?.();
const { main } = await import('../src/cni/plugin.ts');
process.exitCode = await main();
