// Peer "node-ws": the `ws` package with an in-process topic map, speaking
// ringcast's JSON subset (subscribe / unsubscribe / publish / ping) and the
// HTTP API (POST /api/v1/publish, /api/v1/broadcast,
// /api/v1/users/{type}/{id}/send, GET /api/v1/stats).
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const port = parseInt(process.argv[2] || '9002', 10);
const topics = new Map(); // topic -> Set<ws>
const users = new Map(); // "type/id" -> Set<ws>
const all = new Set();
let nextConn = 0;
let published = 0;

function publish(topic, data) {
  published++;
  const subs = topics.get(topic);
  if (!subs) return 0;
  const msg = JSON.stringify({ type: 'message', topic, data });
  for (const ws of subs) ws.send(msg);
  return subs.size;
}

function sendTo(set, topic, data) {
  if (!set) return 0;
  const msg = JSON.stringify({ type: 'message', topic, data });
  for (const ws of set) ws.send(msg);
  return set.size;
}

function reply(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body = {};
    try {
      if (chunks.length) body = JSON.parse(Buffer.concat(chunks).toString());
    } catch (e) {
      return reply(res, 400, { ok: false, error: 'bad json' });
    }
    const url = req.url.split('?')[0];
    if (req.method === 'POST' && url === '/api/v1/publish') {
      if (typeof body.topic !== 'string') return reply(res, 400, { ok: false, error: 'topic' });
      publish(body.topic, body.data);
      return reply(res, 200, { ok: true });
    }
    if (req.method === 'POST' && url === '/api/v1/broadcast') {
      sendTo(all, 'broadcast', body.data);
      return reply(res, 200, { ok: true });
    }
    const m = url.match(/^\/api\/v1\/users\/([^/]+)\/([^/]+)\/send$/);
    if (req.method === 'POST' && m) {
      const n = sendTo(users.get(`${m[1]}/${m[2]}`), 'user', body.data);
      return reply(res, 200, { ok: true, delivered: n });
    }
    if (req.method === 'GET' && url === '/api/v1/stats') {
      return reply(res, 200, { connections: all.size, topics: topics.size, published });
    }
    reply(res, 404, { ok: false, error: 'not found' });
  });
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
server.on('upgrade', (req, socket, head) => {
  if (!req.url.startsWith('/ws')) return socket.destroy();
  wss.handleUpgrade(req, socket, head, (ws) => onConn(ws, req));
});

function onConn(ws, req) {
  const q = new URL(req.url, 'http://x').searchParams;
  const userId = q.get('user_id');
  const userType = q.get('user_type') || 'user';
  const connId = String(nextConn++);
  const mine = new Set();
  all.add(ws);
  let key = null;
  if (userId) {
    key = `${userType}/${userId}`;
    if (!users.has(key)) users.set(key, new Set());
    users.get(key).add(ws);
    ws.send(JSON.stringify({ type: 'auth_success', user_type: userType, user_id: userId, conn_id: connId }));
  } else {
    ws.send(JSON.stringify({ type: 'auth_success', user_type: 'anonymous', user_id: null, conn_id: connId }));
  }
  ws.on('message', (raw) => {
    let m;
    try {
      m = JSON.parse(raw);
    } catch (e) {
      return ws.send(JSON.stringify({ type: 'error', message: 'bad json' }));
    }
    const id = m.id === undefined ? null : m.id;
    switch (m.type) {
      case 'subscribe': {
        if (!topics.has(m.topic)) topics.set(m.topic, new Set());
        topics.get(m.topic).add(ws);
        mine.add(m.topic);
        return ws.send(JSON.stringify({ type: 'subscribed', topic: m.topic, id, recovered: false }));
      }
      case 'unsubscribe': {
        const s = topics.get(m.topic);
        if (s) {
          s.delete(ws);
          if (!s.size) topics.delete(m.topic);
        }
        mine.delete(m.topic);
        return ws.send(JSON.stringify({ type: 'unsubscribed', topic: m.topic, id }));
      }
      case 'publish':
        publish(m.topic, m.data);
        return ws.send(JSON.stringify({ type: 'ack', id }));
      case 'ping':
        return ws.send(JSON.stringify({ type: 'pong', id }));
      default:
        return ws.send(JSON.stringify({ type: 'error', message: 'unknown type', id }));
    }
  });
  ws.on('close', () => {
    all.delete(ws);
    for (const t of mine) {
      const s = topics.get(t);
      if (s) {
        s.delete(ws);
        if (!s.size) topics.delete(t);
      }
    }
    if (key && users.has(key)) {
      users.get(key).delete(ws);
      if (!users.get(key).size) users.delete(key);
    }
  });
  ws.on('error', () => {});
}

server.listen(port, '127.0.0.1', () => console.error(`node-ws peer listening on ${port}`));
