/**
 * deploy/kubernetes: rendered by `kubectl kustomize` (Debian's kubernetes-client runs offline),
 * every object validated against the Kubernetes API schemas (npm kubernetes-models; unknown
 * fields rejected), and the ports, probes and file paths of the manifests checked against the
 * config they mount (loaded by the gateway's own validator) and against a live gateway.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { buildConfig } from '../../server/config/load-config';
import type { GatewayConfig } from '../../server/config/gateway-config';
import { startTestGateway, type TestGateway } from '../support/test-gateway';
import { deployPath, describeRun, httpStatus, run, which } from './support/deploy-files';
import { validateKubernetesObject } from './support/kubernetes-schema';

const kubectl = which('kubectl');
const SKIP = kubectl ? false : 'kubectl is not installed (Debian package kubernetes-client; .ci/run installs it)';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function render(): Obj[] {
  const r = run(kubectl as string, ['kustomize', deployPath('kubernetes')]);
  assert.equal(r.status, 0, describeRun(r));
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj).filter((o) => o);
}

function readDocs(file: string): Obj[] {
  return parseAllDocuments(fs.readFileSync(file, 'utf8')).map((d) => d.toJS() as Obj).filter((o) => o);
}

const byKind = (objs: Obj[], kind: string): Obj[] => objs.filter((o) => o.kind === kind);
const one = (objs: Obj[], kind: string): Obj => {
  const found = byKind(objs, kind);
  assert.equal(found.length, 1, `expected one ${kind}, got ${found.length}`);
  return found[0];
};
const portNumber = (s: string): number => Number(s.slice(s.lastIndexOf(':') + 1));

describe('Kubernetes manifests', { skip: SKIP }, () => {
  let objs: Obj[];
  let deployment: Obj;
  let container: Obj;
  let config: GatewayConfig;
  let configDoc: Obj;

  before(() => {
    objs = render();
    deployment = one(objs, 'Deployment');
    container = deployment.spec.template.spec.containers[0];
    const cm = byKind(objs, 'ConfigMap').find((c) => c.data?.['config.yaml']);
    assert.ok(cm, 'no ConfigMap with config.yaml');
    configDoc = parseYaml(cm.data['config.yaml']) as Obj;
    // The gateway's own validator; relative paths would resolve against the mount directory.
    config = buildConfig(configDoc, '/etc/hsm-gateway', {});
  });

  it('kubectl kustomize renders every expected object', () => {
    const kinds = objs.map((o) => o.kind).sort();
    for (const k of ['Namespace', 'ServiceAccount', 'Deployment', 'Service', 'PodDisruptionBudget', 'HorizontalPodAutoscaler', 'NetworkPolicy', 'ConfigMap']) {
      assert.ok(kinds.includes(k), `no ${k} rendered (got ${kinds})`);
    }
    for (const o of objs) if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'hsm-gateway', `${o.kind} ${o.metadata.name}`);
  });

  it('every rendered object, the example Secrets and the ServiceMonitor validate against the Kubernetes schemas', () => {
    const all = [...objs, ...readDocs(deployPath('kubernetes', 'secrets.example.yaml')), ...readDocs(deployPath('kubernetes', 'prometheus-operator', 'servicemonitor.yaml'))];
    const problems = all.flatMap((o) => validateKubernetesObject(o));
    assert.deepEqual(problems, []);
  });

  it('the schema check fails on a wrong type, a missing required field and an unknown field', () => {
    const bad = structuredClone(deployment);
    bad.spec.replicas = 'two';
    bad.spec.template.spec.containers[0].readinessprobe = bad.spec.template.spec.containers[0].readinessProbe;
    delete bad.spec.selector;
    const problems = validateKubernetesObject(bad).join('\n');
    assert.match(problems, /replicas must be integer/);
    assert.match(problems, /selector/);
    assert.match(problems, /unknown field \/spec\/template\/spec\/containers\/0\/readinessprobe/);
    assert.deepEqual(validateKubernetesObject({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' }, data: { a: 'b' }, datum: 1 }), ['ConfigMap x: unknown field /datum']);
  });

  it('the mounted config is valid for the gateway and listens on all interfaces on the container ports', () => {
    const ports = Object.fromEntries((container.ports as Obj[]).map((p) => [p.name, p.containerPort]));
    assert.equal(portNumber(config.listen.grpc), ports.grpc);
    assert.equal(portNumber(config.listen.http), ports.metrics);
    assert.match(config.listen.grpc, /^0\.0\.0\.0:/, 'gRPC must not listen on loopback in a pod');
    assert.match(config.listen.http, /^0\.0\.0\.0:/, 'the HTTP port must not listen on loopback in a pod (probes, Prometheus)');
  });

  it('HSMGW_CONFIG and every file the config names are provided by a volume mount with that key', () => {
    const env = Object.fromEntries((container.env as Obj[]).map((e) => [e.name, e.value]));
    const volumes = new Map((deployment.spec.template.spec.volumes as Obj[]).map((v) => [v.name, v]));
    const sources = new Map([...byKind(objs, 'ConfigMap'), ...readDocs(deployPath('kubernetes', 'secrets.example.yaml'))].map((o) => [`${o.kind}/${o.metadata.name}`, o]));
    /** The ConfigMap/Secret key a mounted file comes from, or an explanation why none does. */
    function provider(file: string): string {
      for (const m of container.volumeMounts as Obj[]) {
        const vol = volumes.get(m.name);
        assert.ok(vol, `volumeMount ${m.name} has no volume`);
        let key: string;
        if (m.subPath) {
          if (file !== m.mountPath) continue;
          key = m.subPath;
        } else if (file.startsWith(`${m.mountPath}/`)) {
          const rel = file.slice(m.mountPath.length + 1);
          const item = (vol.configMap ?? vol.secret)?.items?.find((i: Obj) => i.path === rel);
          key = item ? item.key : rel;
        } else {
          continue;
        }
        if (vol.configMap) {
          const cm = sources.get(`ConfigMap/${vol.configMap.name}`);
          assert.ok(cm, `volume ${m.name}: no ConfigMap ${vol.configMap.name} rendered`);
          assert.ok(key in (cm.data ?? {}), `${file}: ConfigMap ${vol.configMap.name} has no key ${key}`);
          return `ConfigMap ${vol.configMap.name}/${key}`;
        }
        if (vol.secret) {
          const s = sources.get(`Secret/${vol.secret.secretName}`);
          assert.ok(s, `volume ${m.name}: Secret ${vol.secret.secretName} is not in secrets.example.yaml`);
          assert.ok(key in (s.stringData ?? s.data ?? {}), `${file}: Secret ${vol.secret.secretName} has no key ${key}`);
          return `Secret ${vol.secret.secretName}/${key}`;
        }
        assert.fail(`${file} is under mount ${m.mountPath}, which is not a ConfigMap or Secret`);
      }
      assert.fail(`${file} is not provided by any volume mount`);
    }
    assert.equal(provider(env.HSMGW_CONFIG), 'ConfigMap ' + byKind(objs, 'ConfigMap').find((c) => c.data?.['config.yaml'])?.metadata.name + '/config.yaml');
    provider(config.tls.cert);
    provider(config.tls.key);
    provider(config.tls.clientCa);
    assert.ok(config.pkcs11.pin.file, 'the PIN must come from a file (a Secret volume)');
    assert.match(provider(config.pkcs11.pin.file), /^Secret /);
    for (const [name, value] of Object.entries(config.pkcs11.environment)) {
      if (value.startsWith('/')) assert.match(provider(value), /^ConfigMap hsm-client-config/, `pkcs11.environment.${name}`);
    }
    // The module comes from the image (a derived image puts it in /opt/hsm/lib, which the
    // Dockerfile creates), not from a volume.
    assert.match(config.pkcs11.module, /^\/opt\/hsm\/lib\//);
    assert.match(fs.readFileSync(deployPath('docker', 'Dockerfile'), 'utf8'), /mkdir -p [^\n]*\/opt\/hsm\/lib/);
  });

  it('the pod is locked down: non-root, read-only root filesystem, no capabilities, no API token', () => {
    const pod = deployment.spec.template.spec;
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.ok(pod.securityContext.runAsUser > 0);
    assert.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
    assert.equal(pod.automountServiceAccountToken, false);
    assert.equal(container.securityContext.readOnlyRootFilesystem, true);
    assert.equal(container.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(container.securityContext.capabilities.drop, ['ALL']);
    for (const m of container.volumeMounts as Obj[]) if (m.mountPath !== '/tmp') assert.equal(m.readOnly, true, `${m.mountPath} should be read-only`);
    assert.ok(container.resources.requests.cpu && container.resources.requests.memory && container.resources.limits.memory);
    assert.ok(pod.affinity.podAntiAffinity, 'no anti-affinity');
    assert.ok(pod.terminationGracePeriodSeconds * 1000 > config.shutdown.graceMs + 5000, 'terminationGracePeriodSeconds must cover shutdown.graceMs and the preStop pause');
  });

  it('Service, NetworkPolicy, PDB, HPA, annotations and ServiceMonitor name the same pods and ports', () => {
    const labels = deployment.spec.template.metadata.labels;
    const selects = (sel: Obj): boolean => Object.entries(sel).every(([k, v]) => labels[k] === v);
    const service = one(objs, 'Service');
    assert.equal(service.spec.clusterIP, 'None', 'the Service must be headless for client-side balancing');
    assert.ok(selects(service.spec.selector));
    const containerPorts = new Map((container.ports as Obj[]).map((p) => [p.name, p.containerPort]));
    for (const p of service.spec.ports as Obj[]) {
      assert.ok(containerPorts.has(p.targetPort), `Service port ${p.name} targets unknown container port ${p.targetPort}`);
      assert.equal(p.port, containerPorts.get(p.targetPort));
    }
    const np = one(objs, 'NetworkPolicy');
    assert.ok(selects(np.spec.podSelector.matchLabels));
    const npPorts = (np.spec.ingress as Obj[]).flatMap((r) => r.ports.map((p: Obj) => p.port)).sort();
    assert.deepEqual(npPorts, ['grpc', 'metrics']);
    assert.ok(selects(one(objs, 'PodDisruptionBudget').spec.selector.matchLabels));
    const hpa = one(objs, 'HorizontalPodAutoscaler');
    assert.equal(hpa.spec.scaleTargetRef.kind, 'Deployment');
    assert.equal(hpa.spec.scaleTargetRef.name, deployment.metadata.name);
    assert.ok(hpa.spec.minReplicas >= 2, 'one replica is a single point of failure');
    const annotations = deployment.spec.template.metadata.annotations;
    assert.equal(Number(annotations['prometheus.io/port']), containerPorts.get('metrics'));
    assert.equal(annotations['prometheus.io/path'], '/metrics');
    const sm = readDocs(deployPath('kubernetes', 'prometheus-operator', 'servicemonitor.yaml'))[0];
    assert.ok(Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => service.metadata.labels[k] === v), 'the ServiceMonitor does not select the Service');
    assert.ok((service.spec.ports as Obj[]).some((p) => p.name === sm.spec.endpoints[0].port));
    assert.equal(sm.spec.endpoints[0].path, '/metrics');
    // The alert rules match on job="hsm-gateway": the ServiceMonitor's job label must give that.
    assert.equal(service.metadata.labels[sm.spec.jobLabel], 'hsm-gateway');
  });

  describe('probes against a live gateway', () => {
    let gw: TestGateway;
    before(async () => { gw = await startTestGateway(); });
    after(async () => { await gw?.stop(); });

    it('every probe is an HTTP GET on the metrics port to a path the gateway answers 200 while ready', async () => {
      const base = new URL(gw.metricsUrl).origin;
      const probes = ['startupProbe', 'readinessProbe', 'livenessProbe'].map((name) => [name, container[name]] as const);
      for (const [name, probe] of probes) {
        assert.ok(probe?.httpGet, `${name} must be an HTTP GET (the gRPC port needs a client certificate)`);
        assert.equal(probe.httpGet.port, 'metrics', `${name} must use the metrics port`);
        assert.equal(await httpStatus(`${base}${probe.httpGet.path}`), 200, `${name}: GET ${probe.httpGet.path}`);
      }
      assert.equal(container.readinessProbe.httpGet.path, '/readyz', 'readiness must follow HSM readiness');
      assert.notEqual(container.livenessProbe.httpGet.path, '/readyz', 'liveness on /readyz would restart every replica during an HSM outage');
      // The check is not vacuous: a path the gateway does not serve is not 200.
      assert.notEqual(await httpStatus(`${base}/ready`), 200);
      const annotations = deployment.spec.template.metadata.annotations;
      assert.equal(await httpStatus(`${base}${annotations['prometheus.io/path']}`), 200);
    });
  });
});

describe('Kubernetes example: keyless nginx with an agent sidecar', () => {
  const docs = readDocs(deployPath('kubernetes', 'examples', 'nginx-keyless.yaml'));
  const deployment = one(docs, 'Deployment');
  const config = one(docs, 'ConfigMap');
  const pod = deployment.spec.template.spec;
  const container = (name: string): Obj => pod.containers.find((c: Obj) => c.name === name);
  const mountOf = (c: Obj, volume: string): string => c.volumeMounts.find((m: Obj) => m.name === volume)?.mountPath;
  const flag = (c: Obj, name: string): string | undefined => (c.args as string[]).find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);

  it('every object is valid against the Kubernetes schemas', () => {
    assert.deepEqual(docs.flatMap((o) => validateKubernetesObject(o)), []);
  });

  it('nginx, the provider settings and the agent agree on the socket, the module and the uid', () => {
    const agent = container('agent');
    const nginx = container('nginx');
    const socket = flag(agent, 'socket') ?? '';
    const socketDir = socket.slice(0, socket.lastIndexOf('/'));
    assert.equal(mountOf(agent, 'agent-socket'), socketDir);
    assert.equal(mountOf(nginx, 'agent-socket'), socketDir);
    const cnf = config.data['openssl.cnf'] as string;
    assert.match(cnf, new RegExp(`agent_socket = ${socket}\\n`));
    const module = /module = (\S+)/.exec(cnf)?.[1] ?? '';
    assert.equal(module.slice(0, module.lastIndexOf('/')), mountOf(nginx, 'provider'));
    assert.equal(nginx.env.find((e: Obj) => e.name === 'OPENSSL_CONF')?.value, nginx.volumeMounts.find((m: Obj) => m.subPath === 'openssl.cnf')?.mountPath);
    assert.match(config.data['nginx.conf'], /^env OPENSSL_CONF;$/m, 'nginx passes OPENSSL_CONF to its workers');
    assert.equal(flag(agent, 'allow-uid'), String(nginx.securityContext.runAsUser));
    // The init container copies the module the gateway package ships, from the image's install of
    // it (/app/node_modules/hsm-gateway).
    const copy = pod.initContainers[0].command as string[];
    const shipped = 'client/keyless/native/build/hsmgw-provider.so';
    assert.equal(copy[1], `/app/node_modules/hsm-gateway/${shipped}`);
    const gatewayPackage = JSON.parse(fs.readFileSync(deployPath('..', 'package.json'), 'utf8')) as { files: string[] };
    assert.ok(gatewayPackage.files.includes(shipped), `the gateway package does not ship ${shipped}`);
    assert.match(fs.readFileSync(deployPath('docker', 'Dockerfile'), 'utf8'), /^COPY --from=build \/app \.\/$/m);
  });
});
