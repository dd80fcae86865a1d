// The real-kernel lab (README.md, "The lab"): a flannel host-gw cluster in network namespaces.
export {
  DEFAULT_CLUSTER_CIDR,
  DEFAULT_UNDERLAY_CIDR,
  type LabNodeSpec,
  type LabPodSpec,
  type LabPortSpec,
  type LabServiceSpec,
  type LabSpec,
} from './spec.ts';
export {
  addPod,
  addService,
  createLab,
  destroyLab,
  execInNode,
  execInPod,
  execInSwitch,
  findNode,
  findPod,
  listLabs,
  nodeNetns,
  openLab,
  podNetns,
  removePod,
  removeService,
  startInNode,
  type DestroyResult,
  type LabOptions,
  type LabSummary,
} from './lab.ts';
export {
  allPairs,
  probe,
  probeAllPairs,
  probeMany,
  type ProbeOptions,
  type ProbeOutcome,
  type ProbeRequest,
  type ProbeResult,
  type ProbeSource,
  type ProbeTarget,
} from './probe.ts';
export { LabCommandError, LabError, listNetns, type RunOptions, type RunResult } from './exec.ts';
export { labNetnsPrefix, podKey, parsePodKey, switchNetns, nodeNetnsName, podNetnsName, LabNameError } from './names.ts';
export { DEFAULT_STATE_DIR, labDir, stateRoot, type LabExternal, type LabNode, type LabPod, type LabPort, type LabState } from './state.ts';
export type { LabProtocol, LabService } from './rules.ts';
export { nodeBinary, scriptCommand, SERVER_SCRIPT, PROBER_SCRIPT } from './processes.ts';
