// The JS client under Node's own test runner, against a real server (test/server.mjs).
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import WsPackage from 'ws';

import { connect } from '../realtime.js';
import { Server, refusingProxy, sleep, waitFor } from './server.mjs';

// Node 22+ has a global WebSocket; the Node 20 that Debian ships needs the `ws` package's.
const WebSocket = globalThis.WebSocket || WsPackage;
const servers = [];
const clients = [];

async function startServer(env) {
  const server = new Server(env);
  servers.push(server);
  return server.start();
}

function open(options) {
  const client = connect({ WebSocket, backoff: { base: 100, max: 1000 }, ...options });
  clients.push(client);
  return client;
}

after(async () => {
  for (const client of clients) client.close();
  for (const server of servers) await server.stop();
});

function collector() {
  const events = [];
  const handler = (event) => events.push(event);
  return { events, handler };
}

function assertExactlyOnceInOrder(received, stored) {
  assert.deepEqual(received.map((e) => e.seq), stored.map((e) => e.seq));
  for (let i = 1; i < received.length; i++) assert.ok(received[i].seq > received[i - 1].seq);
}

test('events arrive in order, once each, while posts are created', async () => {
  const server = await startServer();
  const alice = await server.user('alice');
  const client = open({ url: server.url, token: alice.token });
  const { events, handler } = collector();
  client.subscribe(['posts'], handler);
  await waitFor(() => client.status.state === 'open', 10000, 'open');
  assert.equal(client.status.transport, 'websocket');
  for (let i = 0; i < 30; i++) await server.createPost(alice.token, `post ${i}`);
  await waitFor(() => events.length >= 30, 10000, '30 events');
  assert.deepEqual(events.map((e) => e.data.title), [...Array(30).keys()].map((i) => `post ${i}`));
  assert.ok(events.every((e) => e.type === 'post.created' && e.channel === 'posts'));
  assertExactlyOnceInOrder(events, await server.allEvents(['posts']));
});

test('a server killed with SIGKILL and restarted mid-stream: every event exactly once', async () => {
  const server = await startServer();
  const alice = await server.user('alice');
  const statuses = [];
  const client = open({ url: server.url, token: alice.token, onStatus: (s) => statuses.push(s) });
  const { events, handler } = collector();
  client.subscribe(['posts'], handler);
  await waitFor(() => client.status.state === 'open', 10000, 'open');
  let writing = true;
  let written = 0;
  const writer = (async () => {
    while (writing) {
      try {
        await server.createPost(alice.token, `post ${written}`);
        written += 1;
      } catch (_) {
        await sleep(50); // the server is down: try again
      }
    }
  })();
  await waitFor(() => events.length >= 10, 10000, '10 events');
  await server.kill('SIGKILL');
  await waitFor(() => client.status.state === 'reconnecting', 10000, 'reconnecting');
  await server.start();
  await waitFor(() => written >= 40, 20000, '40 posts');
  writing = false;
  await writer;
  const stored = await server.allEvents(['posts']);
  await waitFor(() => events.length >= stored.length, 20000, 'every stored event');
  await sleep(300); // nothing more may come
  assertExactlyOnceInOrder(events, stored);
  assert.ok(statuses.some((s) => s.state === 'reconnecting' && s.attempt >= 1));
  assert.equal(client.status.state, 'open');
});

test('WebSocket refused by Origin: falls back to SSE without losing events', async () => {
  const server = await startServer({ ALLOWED_ORIGINS: 'https://app.example' });
  const alice = await server.user('alice');
  class FromElsewhere extends WsPackage {
    constructor(url) { super(url, { origin: 'https://elsewhere.example' }); }
  }
  const before = await server.createPost(alice.token, 'before');
  const stored = await server.allEvents(['posts']);
  const { events, handler } = collector();
  const client = open({ url: server.url, token: alice.token, WebSocket: FromElsewhere });
  client.subscribe(['posts'], handler, { since: stored.at(-1).seq - 1 });
  await waitFor(() => client.status.state === 'open', 10000, 'open');
  assert.equal(client.status.transport, 'sse');
  for (let i = 0; i < 10; i++) await server.createPost(alice.token, `post ${i}`);
  await waitFor(() => events.length >= 11, 10000, '11 events');
  assert.equal(events[0].data.id, before.id);
  assertExactlyOnceInOrder(events, await server.allEvents(['posts']));
});

test('a proxy that refuses WebSocket and SSE: long-poll, and across a restart', async () => {
  const server = await startServer();
  const alice = await server.user('alice');
  const proxy = await refusingProxy(server.port, { refuseWebSocket: true, refuseSse: true });
  try {
    const { events, handler } = collector();
    const client = open({ url: proxy.url, token: alice.token, pollTimeout: 2 });
    client.subscribe(['posts'], handler);
    await waitFor(() => client.status.state === 'open', 10000, 'open');
    assert.equal(client.status.transport, 'poll');
    for (let i = 0; i < 5; i++) await server.createPost(alice.token, `post ${i}`);
    await waitFor(() => events.length >= 5, 10000, '5 events');
    await server.kill('SIGKILL');
    await server.start();
    for (let i = 5; i < 10; i++) await server.createPost(alice.token, `post ${i}`);
    await waitFor(() => events.length >= 10, 20000, '10 events');
    assertExactlyOnceInOrder(events, await server.allEvents(['posts']));
    assert.equal(client.status.transport, 'poll');
  } finally {
    proxy.close();
  }
});

test('cursor_expired after retention passed while away: onReset, then live again', async () => {
  const server = await startServer();
  const alice = await server.user('alice');
  for (let i = 0; i < 5; i++) await server.createPost(alice.token, `old ${i}`);
  const old = await server.allEvents(['posts']);
  const resets = [];
  const { events, handler } = collector();
  let resumeAt = null;
  const statuses = [];
  let mark = null;
  const client = open({
    url: server.url, token: alice.token, onStatus: (s) => statuses.push(s),
    onReset: async (info) => {
      resets.push(info);
      mark = statuses.length - 1; // the 'connecting' of the reset
      // The app reloads what it shows; the list's Event-Seq is where to resume from.
      const page = await server.request('GET', '/api/v1/posts');
      resumeAt = Number(page.headers.get('Event-Seq'));
      return Number.isInteger(resumeAt) && page.headers.has('Event-Seq') ? resumeAt : undefined;
    },
  });
  await server.kill('SIGKILL');
  // Retention passes while the server is down: the first events are gone from the log.
  await server.python(`
from pymongo import MongoClient
import os
db = MongoClient(os.environ["MONGODB_URI"])[os.environ["MONGODB_DB"]]
db["events"].delete_many({"_id": {"$lt": ${old[3].seq}}})`);
  await server.start();
  client.subscribe(['posts'], handler, { since: old[0].seq - 1 });
  await waitFor(() => resets.length === 1, 10000, 'onReset');
  assert.equal(resets[0].code, 'cursor_expired');
  assert.equal(resets[0].oldest_seq, old[3].seq);
  await waitFor(() => statuses.slice(mark).some((s) => s.state === 'open'), 10000, 'open again');
  assert.equal(statuses[mark].state, 'connecting');
  await server.createPost(alice.token, 'after reset');
  await waitFor(() => events.some((e) => e.data.title === 'after reset'), 10000, 'a live event');
  assert.ok(events.every((e) => !e.data.title.startsWith('old ')));
});

test('the access token is refreshed before it expires', async () => {
  const server = await startServer({ ACCESS_TOKEN_TTL: '2' });
  const admin = await server.admin();
  const bob = await server.user('bob');
  let issued = 0;
  const errors = [];
  const getToken = async () => {
    issued += 1;
    return (await server.request('POST', '/api/v1/auth/login',
      { username: 'bob', password: bob.password })).body.access_token;
  };
  for (const transports of [['websocket'], ['poll']]) {
    issued = 0;
    const { events, handler } = collector();
    const client = open({ url: server.url, getToken, transports, pollTimeout: 1,
      onError: (e) => errors.push(e) });
    client.subscribe([`user:${bob.id}`], handler);
    await waitFor(() => client.status.state === 'open', 10000, 'open');
    for (let i = 0; i < 3; i++) {
      const adminToken = (await server.request('POST', '/api/v1/auth/login',
        { username: 'admin', password: admin.password })).body.access_token;
      const sent = await server.request('POST', '/api/v1/notifications',
        { user_id: bob.id, title: `n${i}`, body: 'hello' }, adminToken);
      assert.equal(sent.status, 202);
      await waitFor(() => events.length > i, 10000, `notification ${i}`);
      await sleep(1500);
    }
    assert.deepEqual(events.map((e) => e.data.title), ['n0', 'n1', 'n2']);
    assert.ok(issued >= 3, `getToken called ${issued} times over 3 token lifetimes`);
    assert.deepEqual(errors, []);
    client.close();
  }
});

test('a channel added to an open WebSocket while events flow: each channel exactly once', async () => {
  const server = await startServer();
  const admin = await server.admin();
  const client = open({ url: server.url, token: admin.token });
  const { events, handler } = collector();
  client.subscribe(['posts'], handler);
  await waitFor(() => client.status.state === 'open', 10000, 'open');
  const product = { sku: 'SKU-1', name: 'Lamp', category: 'home', price_cents: 100, stock: 1000 };
  const created = await server.request('POST', '/api/v1/products', product, admin.token);
  let writing = true;
  const writer = (async () => {
    for (let i = 0; writing; i++) {
      await server.createPost(admin.token, `post ${i}`);
      await server.request('POST', `/api/v1/products/${created.body.id}/stock`, { delta: -1 },
        admin.token);
    }
  })();
  await waitFor(() => events.length >= 5, 10000, '5 events');
  client.subscribe(['products'], handler, { since: 0 }); // with its history, while posts flow
  await sleep(500);
  writing = false;
  await writer;
  const stored = await server.allEvents(['posts', 'products']);
  await waitFor(() => events.filter((e) => e.channel === 'products').length >=
    stored.filter((e) => e.channel === 'products').length, 10000, 'every product event');
  await sleep(300);
  for (const channel of ['posts', 'products']) {
    const got = events.filter((e) => e.channel === channel).map((e) => e.seq);
    const want = stored.filter((e) => e.channel === channel).map((e) => e.seq);
    assert.deepEqual(got, want.slice(want.length - got.length), channel);
    assert.equal(new Set(got).size, got.length, `${channel}: no repeats`);
  }
  assert.equal(events.filter((e) => e.channel === 'products').length,
    stored.filter((e) => e.channel === 'products').length);
});

test('unsubscribe: no more events of that channel', async () => {
  const server = await startServer();
  const alice = await server.user('alice');
  const client = open({ url: server.url, token: alice.token });
  const { events, handler } = collector();
  const subscription = client.subscribe(['posts'], handler);
  await waitFor(() => client.status.state === 'open', 10000, 'open');
  await server.createPost(alice.token, 'seen');
  await waitFor(() => events.length === 1, 10000, 'one event');
  subscription.unsubscribe();
  await server.createPost(alice.token, 'not seen');
  await sleep(500);
  assert.deepEqual(events.map((e) => e.data.title), ['seen']);
});

test('backoff: full jitter under an exponential bound, never sooner than Retry-After', () => {
  const client = connect({ url: 'http://127.0.0.1:9', backoff: { base: 100, max: 1000 } });
  try {
    for (const attempt of [1, 2, 3, 4, 8]) {
      client.status.attempt = attempt;
      const bound = Math.min(1000, 100 * 2 ** (attempt - 1));
      const delays = Array.from({ length: 200 }, () => client._delay(0));
      assert.ok(delays.every((d) => d >= 0 && d <= bound), `attempt ${attempt}`);
      assert.ok(Math.max(...delays) > bound / 2, 'spread over the whole range');
      assert.ok(Array.from({ length: 50 }, () => client._delay(3000)).every((d) => d >= 3000));
    }
  } finally {
    client.close();
  }
});
