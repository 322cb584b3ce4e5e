// GRIP test backend for pollgate, built on the real @fanoutio/grip and
// @fanoutio/serve-grip libraries. Behaves exactly like backend.py (the Python
// twin); see README.md for the interface. Env: GRIP_KEY, GRIP_ISS, PUBLISH_URL,
// optional PUBLISH_TOKEN, optional PUBLISH_ISS (defaults to GRIP_ISS).
//
// Needs `npm ci --prefix tests/grip` first (node_modules next to this file).

import http from 'node:http';
import {
  Channel,
  GripInstruct,
  HttpResponseFormat,
  HttpStreamFormat,
  Item,
  Publisher,
  validateSig,
} from '@fanoutio/grip';
import { ServeGrip } from '@fanoutio/serve-grip';

const env = (name) => {
  const v = process.env[name];
  return v == null || v === '' ? undefined : v;
};
const GRIP_KEY = env('GRIP_KEY');
const GRIP_ISS = env('GRIP_ISS');
const PUBLISH_URL = (env('PUBLISH_URL') ?? 'http://127.0.0.1:5561').replace(/\/+$/, '');
const PUBLISH_TOKEN = env('PUBLISH_TOKEN');
const PUBLISH_ISS = env('PUBLISH_ISS') ?? GRIP_ISS;

// @fanoutio/grip PublisherClient semantics (IGripConfig):
//   control_uri + control_iss + key -> "Authorization: Bearer <JWT{iss,exp=+10m}>" (HS256, key)
//   control_uri + key (no iss)      -> "Authorization: Bearer <key>" (Auth.Bearer, literal token)
//   control_uri only                -> no Authorization header
// verify_iss / verify_key are what serve-grip uses to judge Grip-Sig.
const gripConfig = { control_uri: PUBLISH_URL };
if (PUBLISH_TOKEN != null) {
  gripConfig.key = PUBLISH_TOKEN;
} else if (GRIP_KEY != null && PUBLISH_ISS != null) {
  gripConfig.control_iss = PUBLISH_ISS;
  gripConfig.key = GRIP_KEY;
}
if (GRIP_KEY != null) gripConfig.verify_key = GRIP_KEY;
if (GRIP_ISS != null) gripConfig.verify_iss = GRIP_ISS;

const publisher = new Publisher(gripConfig);
const serveGrip = new ServeGrip({ grip: publisher });

async function sigValid(req) {
  const token = req.headers['grip-sig'];
  if (!token || GRIP_KEY == null) return false;
  // Library check (jose.jwtVerify + iss compare). NOT req.grip.isSigned: serve-grip 2.0.0
  // calls the async validateSig without await, so any Grip-Sig counts as "signed".
  return (await validateSig(String(token), GRIP_KEY, GRIP_ISS)) === true;
}

// Hand-parsed: neither @fanoutio/grip nor serve-grip parses Grip-Last.
//   Grip-Last: <channel>; last-id=<id>   (repeatable and/or comma-joined)
function parseGripLast(req) {
  const out = {};
  const values = req.headersDistinct['grip-last'] ?? [];
  for (const value of values) {
    for (const part of value.split(',')) {
      const params = part.split(';').map((p) => p.trim());
      const name = params[0];
      if (!name) continue;
      for (const p of params.slice(1)) {
        const eq = p.indexOf('=');
        const k = (eq < 0 ? p : p.slice(0, eq)).trim().toLowerCase();
        let v = eq < 0 ? '' : p.slice(eq + 1).trim();
        if (k === 'last-id') {
          if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
          out[name] = v;
        }
      }
    }
  }
  return out;
}

function channelsFrom(q, key) {
  const prev = q.get('prev') || null;
  return (q.get(key) ?? '').split(',').filter((c) => c).map((n) => new Channel(n, prev));
}

function toInt(s, dflt = 0) {
  if (s == null || !/^\s*[-+]?\d+\s*$/.test(s)) return dflt;
  return parseInt(s, 10);
}

function send(res, code, body, ctype, headers = {}) {
  const buf = Buffer.from(body, 'utf8');
  res.writeHead(code, { 'Content-Type': ctype, ...headers, 'Content-Length': String(buf.length) });
  res.end(buf);
}
const sendJson = (res, code, obj, headers) => send(res, code, JSON.stringify(obj), 'application/json', headers);

// GRIP instructions via serve-grip's res.grip.startInstruct() when serve-grip considers the
// request proxied (a Grip-Sig header is present); otherwise (a direct request without
// Grip-Sig, where startInstruct() would throw GripInstructNotAvailableException) build the
// same @fanoutio/grip GripInstruct and add its toHeaders() ourselves. Output is identical.
function startInstruct(req, res) {
  if (req.grip?.isProxied) {
    return { inst: res.grip.startInstruct(), extra: () => ({}) };
  }
  const inst = new GripInstruct();
  return { inst, extra: () => inst.toHeaders() };
}

async function holdResponse(req, res, q, instruct) {
  const valid = (await sigValid(req)) ? 'true' : 'false';
  const last = parseGripLast(req);
  if (Object.keys(last).length > 0) {
    return sendJson(res, 200, { status: 'caught-up', last }, { 'X-Sig-Valid': valid });
  }
  const channels = channelsFrom(q, 'channels');
  const timeout = toInt(q.get('timeout'), 0);
  const race = q.get('race');
  if (race) {
    // A publish that lands while this answer is being made (and is
    // acknowledged before it goes out): the hold must not miss it.
    await publishOne(channels[0].name, 'response', race, null, null);
  }
  const body = JSON.stringify({ status: 'timeout' });
  if (instruct) {
    // Hand-built: @fanoutio/grip only builds header instructions (GripInstruct.toHeaders);
    // this mirrors python gripcontrol create_hold_response() field for field.
    const hold = { mode: 'response', channels: channels.map((c) => {
      const o = { name: c.name };
      if (c.prevId) o['prev-id'] = c.prevId;
      return o;
    }) };
    if (timeout > 0) hold.timeout = timeout;
    const doc = {
      hold,
      response: { code: 200, headers: { 'Content-Type': 'application/json', 'X-Sig-Valid': valid }, body },
    };
    return send(res, 200, JSON.stringify(doc), 'application/grip-instruct', { 'X-Sig-Valid': valid });
  }
  const { inst, extra } = startInstruct(req, res);
  inst.addChannel(channels);
  inst.setHoldLongPoll(timeout > 0 ? timeout : undefined);
  return send(res, 200, body, 'application/json', { ...extra(), 'X-Sig-Valid': valid });
}

function holdStream(req, res, q) {
  const { inst, extra } = startInstruct(req, res);
  inst.addChannel(channelsFrom(q, 'channel'));
  inst.setHoldStream();
  const ka = q.get('keepalive');
  if (ka != null && ka !== '') inst.setKeepAlive('ka\n', toInt(ka, 0));
  return send(res, 200, 'stream-start\n', 'text/plain', extra());
}

async function publishOne(channel, kind, text, id, prev) {
  if (kind === 'response') {
    const fmt = new HttpResponseFormat({ headers: { 'Content-Type': 'text/plain' }, body: text });
    await publisher.publishHttpResponse(channel, fmt, id, prev);
  } else if (kind === 'stream') {
    await publisher.publishHttpStream(channel, new HttpStreamFormat(text), id, prev);
  } else if (kind === 'close') {
    await publisher.publish(channel, new Item(new HttpStreamFormat(null, true), id, prev));
  } else {
    throw new Error(`unknown kind: ${kind}`);
  }
}

// PublishException (from @fanoutio/grip) is not an Error subclass: it has .message and
// .context.statusCode (-1 when the request itself failed).
const errText = (e) => {
  if (e instanceof Error) return e.message;
  if (e != null && typeof e.message === 'string') {
    const code = e.context?.statusCode;
    return code != null ? `${e.message} (status ${code})` : e.message;
  }
  return String(e);
};

async function publish(res, q) {
  const channel = q.get('channel') ?? '';
  const kind = q.get('kind') ?? 'response';
  const text = q.get('body') ?? '';
  const id = q.get('id') || undefined;
  const prev = q.get('prev') || undefined;
  if (!['response', 'stream', 'close'].includes(kind)) {
    return sendJson(res, 400, { ok: false, error: `unknown kind: ${kind}` });
  }
  try {
    await publishOne(channel, kind, text, id, prev);
  } catch (e) {
    return sendJson(res, 502, { ok: false, error: errText(e) });
  }
  return sendJson(res, 200, { ok: true });
}

async function publishMany(res, q) {
  const channel = q.get('channel') ?? '';
  const count = toInt(q.get('count'), 0);
  const prefix = q.get('prefix') ?? '';
  let prev;
  try {
    for (let i = 0; i < count; i++) {
      const id = `${prefix}${i}`;
      await publishOne(channel, 'stream', `${id}\n`, id, prev);
      prev = id;
    }
  } catch (e) {
    return sendJson(res, 502, { ok: false, error: errText(e) });
  }
  return sendJson(res, 200, { ok: true, count });
}

async function handle(req, res) {
  // Drain any request body (inputs are all in the query string).
  await new Promise((resolve) => {
    req.on('end', resolve);
    req.on('error', resolve);
    req.resume();
  });
  if (!(await serveGrip.run(req, res))) return; // serve-grip already answered
  const u = new URL(req.url, 'http://backend');
  const q = u.searchParams;
  const m = req.method;
  switch (`${m} ${u.pathname}`) {
    case 'GET /hold/response': return holdResponse(req, res, q, false);
    case 'GET /hold/instruct': return holdResponse(req, res, q, true);
    case 'GET /hold/stream': return holdStream(req, res, q);
    case 'GET /plain': return send(res, 200, 'plain', 'text/plain');
    case 'GET /sig': return sendJson(res, 200, { valid: await sigValid(req) });
    case 'POST /publish': return publish(res, q);
    case 'POST /publish-many': return publishMany(res, q);
    default: return sendJson(res, 404, { error: 'not found' });
  }
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    if (!res.headersSent) sendJson(res, 500, { error: errText(e) });
    else res.destroy();
  });
});

const stop = () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});
