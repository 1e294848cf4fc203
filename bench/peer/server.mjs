// The Node peer of forge-remote for bench/load: the Forge remote a vendor
// would otherwise write — Express + jose, following Atlassian's and Weavy's
// Node samples, done right: one cached remote JWKS set (refetched by jose on an
// unknown kid), strict iss/aud/alg, an in-memory token cache per accountId with
// expiry, and one Weavy mint per user at a time. It answers only what the
// benchmark drives: POST /resolvers/token, GET /healthz, GET /readyz.
//
// Configured like forge-remote: FORGE_APP_ID, FORGE_JWKS_URL, WEAVY_URL,
// WEAVY_API_KEY, WEAVY_TOKEN_TTL (e.g. 1h), WEAVY_TIMEOUT (e.g. 10s),
// LISTEN_ADDR (host:port or :port). Run with NODE_ENV=production.
import express from 'express';
import { createRemoteJWKSet, jwtVerify, errors as joseErrors } from 'jose';

const ISSUER = 'forge/invocation-token';
const DEFAULT_JWKS_URL = 'https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json';
const APP_ARI_PREFIX = 'ari:cloud:ecosystem::app/';

function fail(msg) {
  console.error(`forge-remote-peer: ${msg}`);
  process.exit(1);
}

function duration(name, def) {
  const s = (process.env[name] || '').trim();
  if (!s) return def;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(s);
  if (!m) fail(`${name} is not a duration (e.g. 1h, 30s): ${JSON.stringify(s)}`);
  return Number(m[1]) * { ms: 1, s: 1e3, m: 60e3, h: 3600e3 }[m[2]];
}

let appId = (process.env.FORGE_APP_ID || '').trim();
if (!appId) fail('FORGE_APP_ID is required');
if (!appId.startsWith(APP_ARI_PREFIX)) appId = APP_ARI_PREFIX + appId;
const jwksURL = new URL((process.env.FORGE_JWKS_URL || '').trim() || DEFAULT_JWKS_URL);
const weavyURL = (process.env.WEAVY_URL || '').trim().replace(/\/+$/, '');
const weavyKey = (process.env.WEAVY_API_KEY || '').trim();
if (!weavyURL || !weavyKey) fail('WEAVY_URL and WEAVY_API_KEY are required');
const tokenTTL = duration('WEAVY_TOKEN_TTL', 3600e3);
const weavyTimeout = duration('WEAVY_TIMEOUT', 10e3);
const listen = (process.env.LISTEN_ADDR || '').trim() || ':8080';
const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon).replace(/^\[|\]$/g, '') || undefined;
const port = Number(listen.slice(colon + 1));
if (colon < 0 || !Number.isInteger(port)) fail(`LISTEN_ADDR must be host:port or :port, got ${listen}`);

// One key set for the process: jose caches it, refetches on an unknown kid
// (at most once per cooldown) and when it is older than cacheMaxAge.
const JWKS = createRemoteJWKSet(jwksURL, { cooldownDuration: 30e3, cacheMaxAge: 15 * 60e3 });
let keysLoaded = false;
async function loadKeys() {
  try {
    await JWKS.reload();
    keysLoaded = true;
  } catch (err) {
    console.error(JSON.stringify({ level: 'error', msg: 'jwks load failed', error: String(err) }));
    setTimeout(loadKeys, 2000).unref();
  }
}
loadKeys();

class HTTPError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function verifyFIT(req) {
  const auth = req.get('authorization') || '';
  const m = /^Bearer\s+(\S+)$/i.exec(auth);
  if (!m) throw new HTTPError(401, 'invalid_token', 'missing bearer token');
  try {
    const { payload } = await jwtVerify(m[1], JWKS, {
      issuer: ISSUER,
      audience: appId,
      algorithms: ['RS256'],
      requiredClaims: ['exp'],
      clockTolerance: 5,
    });
    return payload;
  } catch (err) {
    if (err instanceof joseErrors.JOSEError) throw new HTTPError(401, 'invalid_token', err.code || 'invalid token');
    throw err;
  }
}

// Weavy's rules: an all-digit uid is read as Weavy's numeric id.
const weavyUID = (accountId) => (/^\d+$/.test(accountId) ? 'u-' + accountId : accountId);

const tokens = new Map(); // accountId -> { token, expiresAt (ms) }
const minting = new Map(); // accountId -> Promise<{ token, expiresAt }>

function usable(t, now) {
  if (!t) return false;
  // Serve until 5 minutes (at most half the lifetime) before expiry.
  const margin = Math.min(5 * 60e3, (t.expiresAt - t.issuedAt) / 2);
  return t.expiresAt - margin > now;
}

async function mint(accountId) {
  const sentAt = Date.now();
  let res;
  try {
    res = await fetch(`${weavyURL}/api/users/${encodeURIComponent(weavyUID(accountId))}/tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${weavyKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ expires_in: Math.round(tokenTTL / 1000) }),
      signal: AbortSignal.timeout(weavyTimeout),
    });
  } catch (err) {
    if (err.name === 'TimeoutError') throw new HTTPError(504, 'weavy_timeout', 'Weavy did not answer in time');
    throw new HTTPError(502, 'weavy_unavailable', 'Weavy unreachable');
  }
  const body = await res.json().catch(() => null);
  if (!res.ok || !body || typeof body.access_token !== 'string') {
    throw new HTTPError(502, 'weavy_unavailable', `Weavy answered ${res.status}`);
  }
  const t = { token: body.access_token, issuedAt: sentAt, expiresAt: sentAt + body.expires_in * 1000 };
  tokens.set(accountId, t);
  return t;
}

// One mint per user at a time; every concurrent caller shares it.
function mintOnce(accountId) {
  let p = minting.get(accountId);
  if (!p) {
    p = mint(accountId).finally(() => minting.delete(accountId));
    minting.set(accountId, p);
  }
  return p;
}

async function weavyToken(accountId, refresh) {
  const held = tokens.get(accountId);
  if (!refresh && usable(held, Date.now())) return held;
  const t = await mintOnce(accountId);
  // A refresh must return a token different from the one held before.
  if (refresh && held && t.token === held.token) return mintOnce(accountId);
  return t;
}

const app = express();
app.disable('x-powered-by');
app.disable('etag'); // no use on a POST answer
app.use(express.json({ limit: '1mb', type: () => true }));

app.get('/healthz', (req, res) => res.json({ status: 'ok' }));
app.get('/readyz', (req, res) => {
  if (keysLoaded) res.json({ status: 'ready' });
  else res.status(503).json({ status: 'not_ready', checks: { keys: 'not loaded' } });
});

app.post('/resolvers/:functionKey', async (req, res, next) => {
  try {
    const fit = await verifyFIT(req);
    if (req.params.functionKey !== 'token') throw new HTTPError(404, 'unknown_resolver', 'no such resolver');
    if (typeof fit.principal !== 'string' || !fit.principal) throw new HTTPError(403, 'no_user', 'no user in the invocation');
    const refresh = req.body != null && req.body.refresh === true;
    const t = await weavyToken(fit.principal, refresh);
    res.json({ access_token: t.token, expires_in: Math.max(0, Math.floor((t.expiresAt - Date.now()) / 1000)) });
  } catch (err) {
    next(err);
  }
});

app.use((req, res) => res.status(404).json({ error: { code: 'not_found', message: 'no such route' } }));

// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  if (err instanceof HTTPError) {
    res.status(err.status).json({ error: { code: err.code, message: err.message } });
    return;
  }
  const status = err.status || err.statusCode || 500;
  if (status >= 400 && status < 500) {
    res.status(status).json({ error: { code: status === 413 ? 'body_too_large' : 'bad_request', message: err.type || 'bad request' } });
    return;
  }
  console.error(JSON.stringify({ level: 'error', msg: 'request failed', error: String(err) }));
  res.status(500).json({ error: { code: 'internal', message: 'internal error' } });
});

const server = app.listen(port, host, () => {
  console.log(JSON.stringify({ level: 'info', msg: 'listening', addr: listen }));
});
server.keepAliveTimeout = 75e3;
server.headersTimeout = 80e3;

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => server.close(() => process.exit(0)).closeAllConnections());
}
