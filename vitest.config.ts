import { defineConfig } from 'vitest/config';

// Two projects, run one after the other (sequence.groupOrder):
// - unit: everything but the end-to-end lab tests, two files at a time (two cores); the kernel
//   tests among them use one small network namespace each;
// - e2e: the lab tests (two-node clusters of namespaces, agents, probers, the image), one file
//   at a time: each wants the machine's two cores for its timing bounds (a pod's first instant,
//   flows that stop within a second), and two labs at once only measure each other.
// `npm run test:unit` runs the first alone, without the kernel tests.
export default defineConfig({
  test: {
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
          exclude: ['test/e2e/**', 'node_modules/**'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
