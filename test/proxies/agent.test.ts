// `hsm-gateway agent` byte for byte: the version 1 frames of docs/KEYLESS-AGENT.md over its Unix
// socket, against the real gateway; answers matched by request id, refusals with the gateway's
// exact gRPC code, malformed frames closing the connection.
import assert from 'node:assert/strict';
import { constants, createHash, createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { status } from '@grpc/grpc-js';

import { freePort } from '../support/free-port';
import { startGatewayProcess, type GatewayProcess } from '../support/gateway-process';
import { scratchDir, startAgent, type AgentProcess } from './support/proxy-kit';

function request(id: number, algorithm: number, key: string, input: Buffer, version = 1): Buffer {
  const name = Buffer.from(key);
  const body = Buffer.alloc(13 + name.length + input.length);
  body[0] = version;
  body[1] = 1;
  body.writeUInt32BE(id, 2);
  body[6] = algorithm;
  body.writeUInt16BE(name.length, 7);
  name.copy(body, 9);
  body.writeUInt32BE(input.length, 9 + name.length);
  input.copy(body, 13 + name.length);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  return Buffer.concat([length, body]);
}

interface Answer { id: number; signature?: Buffer; code?: number; message?: string }

/** Writes `frames` on a new connection; the answers read until `count` arrived or the agent closed. */
function exchange(socket: string, frames: Buffer, count: number): Promise<{ answers: Answer[]; closed: boolean }> {
  return new Promise((resolve) => {
    const answers: Answer[] = [];
    let data = Buffer.alloc(0);
    const s = net.connect(socket, () => s.write(frames));
    const done = (closed: boolean): void => { s.destroy(); resolve({ answers, closed }); };
    s.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      while (data.length >= 4 && data.length >= 4 + data.readUInt32BE(0)) {
        const body = data.subarray(4, 4 + data.readUInt32BE(0));
        data = data.subarray(4 + body.length);
        const id = body.readUInt32BE(2);
        if (body[1] === 2) answers.push({ id, signature: Buffer.from(body.subarray(10, 10 + body.readUInt32BE(6))) });
        else answers.push({ id, code: body[6], message: body.toString('utf8', 9, 9 + body.readUInt16BE(7)) });
      }
      if (answers.length >= count) done(false);
    });
    s.on('close', () => done(true));
    s.on('error', () => done(true));
  });
}

describe('hsm-gateway agent, byte for byte', () => {
  let dir: string;
  let gateway: GatewayProcess;
  let agent: AgentProcess;

  before(async () => {
    dir = scratchDir('agent');
    gateway = await startGatewayProcess();
    agent = await startAgent(dir, [gateway.endpoint], gateway, { metricsPort: await freePort() });
  });

  after(async () => {
    await agent?.stop();
    await gateway?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('sign requests, pipelined on one connection, are answered by id with signatures that verify against the GetKey keys', async () => {
    const message = Buffer.from('agent protocol');
    const digest = createHash('sha256').update(message).digest();
    const { answers } = await exchange(agent.socket, Buffer.concat([request(7, 7, 'dev-ec', digest), request(8, 4, 'dev-rsa', digest)]), 2);
    const byId = new Map(answers.map((a) => [a.id, a]));
    const publicKey = async (name: string): Promise<KeyObject> => createPublicKey({ key: (await gateway.client().getKey(name)).publicKey, format: 'der', type: 'spki' });
    const ec = byId.get(7)?.signature;
    const rsa = byId.get(8)?.signature;
    assert.ok(ec && rsa, JSON.stringify(answers));
    assert.ok(verify('sha256', message, { key: await publicKey('dev-ec'), dsaEncoding: 'der' }, ec));
    assert.ok(verify('sha256', message, { key: await publicKey('dev-rsa'), padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, rsa));
    assert.equal(verify('sha256', Buffer.from('another'), { key: await publicKey('dev-ec'), dsaEncoding: 'der' }, ec), false);
  });

  test('refusals carry the gateway\'s exact gRPC code: unknown algorithm, wrong digest length, a key this client may not use', async () => {
    const { answers } = await exchange(agent.socket, Buffer.concat([
      request(1, 42, 'dev-ec', randomBytes(32)),
      request(2, 7, 'dev-ec', randomBytes(20)),
      request(3, 7, 'not-mine', randomBytes(32)),
    ]), 3);
    const byId = new Map(answers.map((a) => [a.id, a]));
    assert.equal(byId.get(1)?.code, status.INVALID_ARGUMENT);
    assert.match(byId.get(1)?.message ?? '', /unknown algorithm 42/);
    assert.equal(byId.get(2)?.code, status.INVALID_ARGUMENT);
    assert.match(byId.get(2)?.message ?? '', /digest must be 32 bytes/);
    assert.equal(byId.get(3)?.code, status.PERMISSION_DENIED);
  });

  test('a frame that is not a version 1 sign request closes the connection and is counted', async () => {
    const metric = async (): Promise<number> => Number(/^hsmgw_agent_protocol_errors_total (\d+)/m.exec(await (await fetch(agent.metricsUrl)).text())?.[1] ?? NaN);
    const before = await metric();
    const badVersion = await exchange(agent.socket, request(1, 7, 'dev-ec', randomBytes(32), 2), 1);
    assert.deepEqual(badVersion, { answers: [], closed: true });
    const oversize = Buffer.alloc(8);
    oversize.writeUInt32BE(1 << 20);
    assert.deepEqual(await exchange(agent.socket, oversize, 1), { answers: [], closed: true });
    assert.equal(await metric(), before + 2);
    // The agent keeps serving.
    const { answers } = await exchange(agent.socket, request(5, 7, 'dev-ec', randomBytes(32)), 1);
    assert.ok(answers[0]?.signature);
  });
});
