// What the browser test needs around the page: stub backup daemons, the real `etho-backup node`
// process, and headless Chromium. Everything listens on 127.0.0.1 and is stopped by the test.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Where screenshots go (`target/` is ignored by git). */
export const SCREENSHOT_DIR = path.join(REPO_ROOT, 'target', 'dashboard-screenshots');

/** Polls `check` (sync or async) until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor(what, check, timeoutMs = 10_000, intervalMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${lastError.message}` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * A stand-in for one backup daemon's `GET /status` (and `GET /history/<id>` for the ids in
 * `histories`) on 127.0.0.1. `set(doc)` changes what it answers (a function is called for every
 * request, so its times can follow the clock); `stop()` closes the port (connections are refused
 * afterwards, like a dead daemon); `start()` listens again on the same port.
 */
export class StubDaemon {
  constructor(name, document) {
    this.name = name;
    this.document = document;
    /** `GET /history/<id>` answers, by device id. */
    this.histories = {};
    this.port = 0;
    this.requests = 0;
    this.server = null;
    this.sockets = new Set();
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  set(document) {
    this.document = document;
  }

  async start() {
    const server = http.createServer((req, res) => {
      this.requests += 1;
      const history = req.url.startsWith('/history/') ? this.histories[req.url.slice('/history/'.length)] : undefined;
      if (req.method === 'GET' && req.url === '/status') {
        const doc = typeof this.document === 'function' ? this.document() : this.document;
        const body = JSON.stringify(doc);
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else if (req.method === 'GET' && history) {
        const body = JSON.stringify(history);
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end('{"error":"not found"}');
      }
    });
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    await new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', resolve);
    });
    this.port = server.address().port;
    this.server = server;
  }

  async stop() {
    if (!this.server) return;
    const server = this.server;
    this.server = null;
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
}

/**
 * A stand-in ethoscope: the device HTTP API the node polls (`/id`, `/data/<id>`,
 * `/data/databases/<id>`, answering `databases`), on `host` (a loopback address) and a free port
 * (the same one again after `stop()` and `start()`).
 */
export class StubDevice {
  constructor(host, info, databases = { SQLite: {}, MariaDB: {} }) {
    this.host = host;
    this.info = info;
    this.databases = databases;
    this.port = 0;
    this.server = null;
  }

  get target() {
    return `${this.host}:${this.port}`;
  }

  async start() {
    const { id } = this.info;
    this.server = http.createServer((req, res) => {
      let body;
      if (req.url === '/id') body = { id };
      else if (req.url === `/data/${id}`) body = this.info;
      else if (req.url === `/data/databases/${id}`) body = this.databases;
      else body = { error: `no route ${req.url}` };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, this.host, resolve);
    });
    this.port = this.server.address().port;
  }

  async stop() {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
    this.server = null;
  }
}

/** The real `etho-backup node`, on a free loopback port, with its own state directory. */
export class NodeProcess {
  constructor(binary) {
    this.binary = binary;
    this.output = '';
    this.child = null;
    this.stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'etho-dashboard-test-'));
  }

  async start({ mysqlUrl, rsyncUrl, extraArgs = [] }) {
    if (!fs.existsSync(this.binary)) {
      throw new Error(`${this.binary} does not exist: build it with \`cargo build -p etho-backup\` or set ETHO_BACKUP_BIN`);
    }
    this.port = await freePort();
    this.url = `http://127.0.0.1:${this.port}/`;
    const args = [
      'node',
      '--listen', `127.0.0.1:${this.port}`,
      '--mysql-backup-url', mysqlUrl,
      '--rsync-backup-url', rsyncUrl,
      '--daemon-timeout', '1',
      '--state-dir', this.stateDir,
      ...extraArgs,
    ];
    this.child = spawn(this.binary, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
    });
    // If this test process dies without running `stop()`, do not leave the node behind.
    const child = this.child;
    process.once('exit', () => child.kill('SIGKILL'));
    const collect = (chunk) => {
      this.output = (this.output + chunk).slice(-20_000);
    };
    this.child.stdout.on('data', collect);
    this.child.stderr.on('data', collect);
    const exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited = exited;
    let exitedEarly = null;
    exited.then((result) => { exitedEarly = result; });
    await waitFor('the node to answer /healthz', async () => {
      if (exitedEarly) throw new Error(`node exited early (${JSON.stringify(exitedEarly)}):\n${this.output}`);
      const response = await fetch(new URL('healthz', this.url), { signal: AbortSignal.timeout(1000) });
      return response.ok;
    }, 20_000);
  }

  async stop() {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(timer);
    }
    fs.rmSync(this.stateDir, { recursive: true, force: true });
  }
}

/** Debian's Chromium, headless, driven by playwright-core (which downloads no browser of its own). */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // The page lives on 127.0.0.1; every other host (a browser service reaching out)
      // resolves to nothing, so no request can leave the machine.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    ],
  });
}

/** Collects what would show in the browser console as an error. */
export function watchConsole(page) {
  const errors = [];
  page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console: ${message.text()}`);
  });
  return errors;
}

/** Saves a full-page screenshot as `target/dashboard-screenshots/<name>.png`; returns its path. */
export async function screenshot(page, name) {
  fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
