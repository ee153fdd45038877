// A real server for the client tests: `run.py` from this repository as a child process, on the
// database that TEST_MONGODB_URI names (tests/test_js_client.py passes the suite's FerretDB).
// It can be killed with SIGKILL and started again on the same data and port.

import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, openSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const PYTHON = process.env.PYTHON || 'python3';
const MONGODB_URI = process.env.TEST_MONGODB_URI;
export const JWT_SECRET = process.env.JWT_SECRET || 'test-secret-' + 'x'.repeat(40);

if (!MONGODB_URI) {
  throw new Error('TEST_MONGODB_URI is not set: run these tests through ' +
    'tests/test_js_client.py (pytest), which starts FerretDB');
}

export function freePort() {
  return new Promise((done, fail) => {
    const probe = net.createServer();
    probe.once('error', fail);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => done(port));
    });
  });
}

export const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

export async function waitFor(predicate, timeout = 20000, what = 'condition') {
  const deadline = Date.now() + timeout;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

export class Server {
  constructor(env = {}) {
    this.env = env;
    this.db = `test_js_${randomBytes(6).toString('hex')}`;
    this.dir = mkdtempSync(join(tmpdir(), 'realtime-js-'));
    this.port = null;
    this.child = null;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get childEnv() {
    return {
      ...process.env, APP_ENV: 'development', MONGODB_URI, MONGODB_DB: this.db,
      JWT_SECRET, BCRYPT_ROUNDS: '4', LOG_LEVEL: 'WARNING', PORT: String(this.port),
      DATA_DIR: join(this.dir, 'data'), ...this.env,
    };
  }

  async start() {
    if (this.port === null) this.port = await freePort();
    const log = openSync(join(this.dir, 'server.log'), 'a');
    this.child = spawn(PYTHON, ['run.py'], { cwd: ROOT, env: this.childEnv,
      stdio: ['ignore', 'ignore', log] });
    const child = this.child;
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`server exited (see ${this.dir}/server.log)`);
      try {
        return (await fetch(`${this.url}/health/ready`)).status === 200;
      } catch (_) {
        return false;
      }
    }, 30000, 'the server to be ready');
    return this;
  }

  async kill(signal = 'SIGKILL') {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((done) => child.once('exit', done));
    child.kill(signal);
    await exited;
  }

  stop() {
    return this.kill('SIGTERM');
  }

  // Runs Python on the server's own database (with the server stopped): pymongo is in the venv.
  async python(code) {
    await promisify(execFile)(PYTHON, ['-c', code], { cwd: ROOT, env: this.childEnv });
  }

  async request(method, path, body, token) {
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(this.url + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    return { status: response.status, headers: response.headers,
      body: text ? JSON.parse(text) : null };
  }

  async user(username, password = 'password123') {
    await this.request('POST', '/api/v1/auth/register',
      { username, email: `${username}@example.com`, password });
    const login = await this.request('POST', '/api/v1/auth/login', { username, password });
    const me = await this.request('GET', '/api/v1/users/me', undefined, login.body.access_token);
    return { id: me.body.id, password, username, token: login.body.access_token };
  }

  async admin(username = 'admin', password = 'admin-password-1') {
    await promisify(execFile)(PYTHON, ['run.py', 'create-admin', '--username', username,
      '--email', `${username}@example.com`], { cwd: ROOT,
      env: { ...this.childEnv, ADMIN_PASSWORD: password } });
    const login = await this.request('POST', '/api/v1/auth/login', { username, password });
    return { token: login.body.access_token, username, password };
  }

  async createPost(token, title) {
    const response = await this.request('POST', '/api/v1/posts', { title, content: 'body' }, token);
    if (response.status !== 201) throw new Error(`POST /posts: ${response.status}`);
    return response.body;
  }

  // Every stored event on `channels`, read back page by page over long-poll: the truth the
  // client's deliveries are compared with.
  async allEvents(channels, token) {
    const out = [];
    let since = 0;
    for (;;) {
      const response = await this.request('GET',
        `/api/v1/poll?channels=${channels.join(',')}&since=${since}&timeout=0`, undefined, token);
      out.push(...response.body.events);
      if (!response.body.events.length) return out;
      since = response.body.cursor;
    }
  }
}

// A reverse proxy in front of the server that refuses some paths, the way a proxy that does
// not pass WebSocket upgrades or buffers event streams does.
export async function refusingProxy(upstreamPort, { refuseWebSocket = true, refuseSse = false } = {}) {
  const proxy = http.createServer((request, response) => {
    if (refuseSse && request.url.startsWith('/api/v1/stream')) {
      response.writeHead(502, { 'Content-Type': 'text/html' });
      response.end('<h1>502 Bad Gateway</h1>');
      return;
    }
    const upstream = http.request({ host: '127.0.0.1', port: upstreamPort, method: request.method,
      path: request.url, headers: request.headers }, (answer) => {
      response.writeHead(answer.statusCode, answer.headers);
      answer.pipe(response);
    });
    upstream.on('error', () => { response.destroy(); });
    request.pipe(upstream);
  });
  proxy.on('upgrade', (request, socket) => {
    if (refuseWebSocket) socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });
  const port = await freePort();
  await new Promise((done) => proxy.listen(port, '127.0.0.1', done));
  return { url: `http://127.0.0.1:${port}`, close: () => { proxy.closeAllConnections(); proxy.close(); } };
}
