#!/usr/bin/env node
// Chromium smoke test of the BUILT Custom UI (dist/), exactly what `forge deploy`
// uploads. Run `npm run build` first.
//
// How it works:
// - dist/ is served on 127.0.0.1 by a tiny static server that sends a Forge-like
//   Content-Security-Policy: script-src 'self' (no inline scripts),
//   style-src 'self' 'unsafe-inline' (the UIKit needs it), connect-src/img-src
//   'self' + the Weavy environment. Any CSP violation fails the test.
// - The page's real @forge/bridge is kept. What is stubbed is the Forge HOST:
//   window.__bridge.callBridge, which the bridge calls for getContext and
//   invokeRemote, is installed before the page loads and answers per scenario
//   and per resolver (/resolvers/token, /resolvers/chat; the chat's answers can
//   be a sequence, one per call, the last repeated). It holds the first token
//   and the first chat answers until both calls have arrived, so a page that
//   made them one after the other would never load (and fail the scenario).
// - The page's #app states (loading, busy, error, mounted) and texts are
//   recorded in the page as they change, so a passing state such as the
//   "Confluence is busy" note is checked afterwards, whatever the machine's speed.
// - Every request to the Weavy environment (baked into the build through
//   VITE_WEAVY_URL) is recorded and then aborted: no Weavy runs here (in the
//   refresh scenario, requests with the first token get a 401 instead). Any
//   other non-loopback request fails the test (everything must be bundled).
// - Console errors fail the test, except exactly the browser's own network log
//   line for a Weavy request this script failed on purpose: "Failed to load
//   resource: net::ERR_…" (aborted) or "… status of 401 …" (answered 401),
//   at that request's URL.
//
// Exit status 0 = all scenarios passed; 1 = a check failed; 2 = setup failed.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.resolve(here, '..', 'dist');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const TIMEOUT = 15_000;

const CONTEXT = {
  cloudId: 'a436116f-02ce-4520-8fbb-7301462a1674',
  localId: 'smoke-local-id',
  moduleKey: 'weavy-chat-macro',
  accountId: '5b10ac8d82e05b22cc7d4ef5',
  locale: 'en-US',
  extension: { type: 'macro', content: { id: '98307', type: 'page' }, space: { key: 'DEV', id: '65539' } },
};
// The Weavy app id the fake remote's chat resolver answers; the page must
// mount <wy-chat uid="4711"> so that the UIKit only GETs /api/apps/4711.
const APP_ID = 4711;

// What the chat call's body must be for CONTEXT: the page the context names.
const PAGE_BODY = { contentId: '98307', contentType: 'page', spaceKey: 'DEV' };

// What the stubbed Forge host answers to invokeRemote, in its own format
// (header values as lists; @forge/bridge joins them).
const answer = (status, body, headers = {}) =>
  status >= 200 && status < 300 ? { success: true, payload: { status, headers, body } } : { success: false, error: { status, headers, body } };
const refusal = (status, code, message, headers) => answer(status, { error: { code, message } }, headers);
const TOKEN_OK = answer(200, { access_token: 'wyu_test', expires_in: 3600 });
const CHAT_OK = answer(200, { app_id: APP_ID, uid: 'cf-a436116f-page-98307-3c1d0e9a', name: 'Confluence page 98307' });

// Per scenario: the answers of /resolvers/token and /resolvers/chat.
const SCENARIOS = [
  {
    name: 'token and chat ok → <wy-chat uid="4711"> mounts, the UIKit only GETs the app',
    bridge: true,
    token: TOKEN_OK,
    chat: CHAT_OK,
    expect: 'mounted',
  },
  {
    name: 'Weavy answers 401 → the UIKit calls tokenFactory(true) → refresh:true reaches the remote, new token used',
    bridge: true,
    token: TOKEN_OK,
    chat: CHAT_OK,
    refreshed: 'wyu_test_refreshed',
    weavy401: true,
    expect: 'mounted',
  },
  {
    name: 'chat answers 403 anonymous (token too) → plain words, nothing mounted',
    bridge: true,
    token: refusal(403, 'anonymous', 'the invocation has the anonymous principal'),
    chat: refusal(403, 'anonymous', 'the invocation has the anonymous principal'),
    expect: 'error',
    message: 'Chat is unavailable: you are not logged in. Log in to Confluence to use this chat.',
    detail: 'anonymous — the invocation has the anonymous principal (HTTP 403)',
  },
  {
    name: 'chat answers 403 no_access (the user cannot view the page), the token is fine → plain words, no retry, nothing mounted',
    bridge: true,
    token: TOKEN_OK,
    chat: refusal(403, 'no_access', 'Confluence says user 5b10ac8d82e05b22cc7d4ef5 cannot view content 98307'),
    expect: 'error',
    message: "You can't view this page, so you can't join its chat.",
    detail: 'no_access — Confluence says user 5b10ac8d82e05b22cc7d4ef5 cannot view content 98307 (HTTP 403)',
    retryButton: false,
    waitForRetries: true,
  },
  {
    name: 'chat answers 503 confluence_busy with Retry-After: 1, then 200 → the busy note, the chat called again after ~1 s, then the chat mounts',
    bridge: true,
    token: TOKEN_OK,
    chat: [refusal(503, 'confluence_busy', 'Confluence answered 429', { 'retry-after': ['1'] }), CHAT_OK],
    chatCalls: 2,
    busy: 'Confluence is busy right now; trying again in 1 s…',
    busyAtLeastMs: 900,
    expect: 'mounted',
  },
  {
    name: 'chat answers 503 confluence_unavailable, then 200 → message with "Try again"; clicking it mounts the chat',
    bridge: true,
    token: TOKEN_OK,
    chat: [refusal(503, 'confluence_unavailable', 'Confluence did not answer in 10s'), CHAT_OK],
    chatCalls: 2,
    tokenCalls: 2,
    retry: {
      message: 'Chat is unavailable: Confluence did not answer when asked whether you can view this page.',
      detail: 'confluence_unavailable — Confluence did not answer in 10s (HTTP 503)',
    },
    expect: 'mounted',
  },
  {
    name: 'chat answers 403 user_token_missing → a message for the admin, no retry, nothing mounted',
    bridge: true,
    token: TOKEN_OK,
    chat: refusal(403, 'user_token_missing', 'the invocation has no user token: add appUserToken to the remote endpoint'),
    expect: 'error',
    message: 'This app is misconfigured: ',
    detail: 'user_token_missing — the invocation has no user token: add appUserToken to the remote endpoint (HTTP 403)',
    retryButton: false,
  },
  {
    name: 'a global page (the context names no content and no space) → the chat body is {}, the chat mounts',
    bridge: true,
    ctx: { ...CONTEXT, moduleKey: 'weavy-chat-global', extension: { type: 'confluence:globalPage' } },
    chatBody: {},
    token: TOKEN_OK,
    chat: CHAT_OK,
    expect: 'mounted',
  },
  {
    name: 'both answer 403 license_inactive → plain words, nothing mounted',
    bridge: true,
    token: refusal(403, 'license_inactive', 'the app licence is not active'),
    chat: refusal(403, 'license_inactive', 'the app licence is not active'),
    expect: 'error',
    message: "Chat is unavailable: this app's licence is not active on this Confluence site.",
    detail: 'license_inactive — the app licence is not active (HTTP 403)',
  },
  {
    name: 'chat answers a uid string instead of an app id → refused (the UIKit would upsert it)',
    bridge: true,
    token: TOKEN_OK,
    chat: answer(200, { app_id: 'confluence-a436116f-page-98307', uid: 'confluence-a436116f-page-98307', name: 'x' }),
    expect: 'error',
    message: 'Chat is unavailable: invalid_response — the remote did not answer a numeric Weavy app id (app_id: string)',
  },
  {
    name: 'token answers 502 weavy_unavailable → readable message',
    bridge: true,
    token: refusal(502, 'weavy_unavailable', 'Weavy answered 500'),
    chat: CHAT_OK,
    expect: 'error',
    message: 'Chat is unavailable: weavy_unavailable — Weavy answered 500',
    retryButton: true,
  },
  {
    name: 'remote answers an API key (wys_) → refused, never reaches the UIKit',
    bridge: true,
    token: answer(200, { access_token: 'wys_leaked_api_key', expires_in: 3600 }),
    chat: CHAT_OK,
    expect: 'error',
    message: 'Chat is unavailable: invalid_token — the remote answered a Weavy API key',
  },
  {
    name: 'opened outside Forge (no bridge) → readable message',
    bridge: false,
    expect: 'error',
    message: 'Chat is unavailable: this page only works inside Confluence',
  },
];

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.svg': 'image/svg+xml', '.woff2': 'font/woff2', '.png': 'image/png', '.mjs': 'text/javascript' };

function cspFor(weavy) {
  const w = new URL(weavy);
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    `img-src 'self' data: blob: ${w.origin}`,
    `connect-src 'self' ${w.origin} wss://${w.host}`,
    "font-src 'self' data:",
    "object-src 'none'",
    "base-uri 'self'",
  ].join('; ');
}

function serve(csp) {
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname).replace(/^\/+/, '') || 'index.html';
    const file = path.resolve(DIST, rel);
    if (!file.startsWith(DIST + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      return res.end('not found');
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'content-security-policy': csp });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** The Weavy URL the build baked in (vite.config.ts records it in a <meta>). */
function bakedWeavyUrl() {
  const html = fs.readFileSync(path.join(DIST, 'index.html'), 'utf8');
  const m = html.match(/<meta name="weavy-url" content="([^"]+)"/);
  if (!m) throw new Error('dist/index.html has no <meta name="weavy-url">: rebuild with "npm run build"');
  return new URL(m[1]).origin;
}

async function run(browser, base, weavyOrigin, sc) {
  const checks = [];
  const check = (ok, what) => checks.push({ ok: Boolean(ok), what });

  const context = await browser.newContext();
  const page = await context.newPage();
  const consoleErrors = [];
  const ignored = [];
  const failedOnPurpose = new Set();
  const weavyRequests = [];
  const foreign = [];

  await context.route(
    (url) => url.origin !== new URL(base).origin,
    (route) => {
      const req = route.request();
      if (new URL(req.url()).origin === weavyOrigin) {
        const authorization = req.headers()['authorization'] ?? '';
        weavyRequests.push({ method: req.method(), url: req.url(), authorization });
        failedOnPurpose.add(req.url());
        if (sc.weavy401 && authorization === 'Bearer wyu_test') {
          return route.fulfill({ status: 401, contentType: 'application/problem+json', body: '{"title":"Unauthorized","status":401}' });
        }
      } else {
        foreign.push(req.url());
      }
      return route.abort('connectionrefused');
    },
  );

  page.on('pageerror', (err) => consoleErrors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    const at = msg.location()?.url ?? '';
    if (/^Failed to load resource: (net::ERR_|the server responded with a status of 401\b)/.test(text) && failedOnPurpose.has(at)) {
      ignored.push(at);
      return;
    }
    consoleErrors.push(`${text}${at ? ` (at ${at})` : ''}`);
  });

  await page.addInitScript(
    ({ withBridge, tokenAnswer, chatAnswers, refreshed, ctx }) => {
      let refreshes = 0;
      let chats = 0;
      window.__smoke = { bridgeCalls: [], csp: [], parallel: false, states: [] };
      document.addEventListener('securitypolicyviolation', (e) =>
        window.__smoke.csp.push(`${e.violatedDirective} blocked ${e.blockedURI} (${e.sourceFile}:${e.lineNumber})`),
      );
      // Every change of #app's state or text, as it happens.
      new MutationObserver(() => {
        const app = document.getElementById('app');
        if (!app) return;
        const state = app.dataset.state ?? '';
        const text = app.querySelector('[role=status], [role=alert]')?.textContent ?? '';
        const last = window.__smoke.states.at(-1);
        if (!last || last.state !== state || last.text !== text) window.__smoke.states.push({ state, text, at: Date.now() });
      }).observe(document, { subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ['data-state'] });
      if (!withBridge) return;
      // The first token call and the chat call are answered only once both
      // have arrived: the page must make them in parallel.
      const first = new Set();
      let bothArrived;
      const both = new Promise((resolve) => (bothArrived = resolve));
      const arrived = (what) => {
        first.add(what);
        if (first.has('token') && first.has('chat')) {
          window.__smoke.parallel = true;
          bothArrived();
        }
        return both;
      };
      window.__bridge = {
        callBridge: async (name, payload) => {
          window.__smoke.bridgeCalls.push({ name, payload: payload === undefined ? null : JSON.parse(JSON.stringify(payload)), at: Date.now() });
          if (name === 'getContext') return ctx;
          if (name !== 'invoke') return undefined;
          if (payload?.path === '/resolvers/token' && payload?.body?.refresh === true && refreshed) {
            refreshes += 1;
            return { success: true, payload: { status: 200, headers: {}, body: { access_token: `${refreshed}_${refreshes}`, expires_in: 3600 } } };
          }
          if (payload?.path === '/resolvers/token') {
            if (payload?.body?.refresh === false) await arrived('token');
            return tokenAnswer;
          }
          if (payload?.path === '/resolvers/chat') {
            await arrived('chat');
            const i = Math.min(chats, chatAnswers.length - 1);
            chats += 1;
            return chatAnswers[i];
          }
          return { success: false, error: { status: 404, headers: {}, body: { error: { code: 'not_found', message: 'no such resolver' } } } };
        },
      };
    },
    {
      withBridge: sc.bridge,
      tokenAnswer: sc.token ?? null,
      chatAnswers: Array.isArray(sc.chat) ? sc.chat : [sc.chat ?? null],
      refreshed: sc.refreshed ?? null,
      ctx: sc.ctx ?? CONTEXT,
    },
  );

  const response = await page.goto(`${base}/index.html`);
  check(response?.status() === 200, 'dist/index.html served (200)');

  const settled = () =>
    page.waitForFunction(() => ['mounted', 'error'].includes(document.getElementById('app')?.dataset.state ?? ''), null, { timeout: TIMEOUT }).catch(() => {});
  await settled();

  if (sc.retry) {
    // A transient error first: its message and a "Try again" button, nothing
    // mounted and nothing sent to Weavy yet; the button starts over.
    const dom = await page.evaluate(() => ({
      state: document.getElementById('app')?.dataset.state,
      alert: document.querySelector('[role=alert] p')?.textContent ?? '',
      detail: document.querySelector('[role=alert] .detail')?.textContent ?? null,
      button: document.querySelector('[role=alert] button')?.textContent ?? null,
      chat: Boolean(document.querySelector('wy-chat')),
    }));
    check(dom.state === 'error', `#app first reached state "error" (got "${dom.state}")`);
    check(dom.alert.startsWith(sc.retry.message), `message shown: ${JSON.stringify(dom.alert)}`);
    check(dom.detail === sc.retry.detail, `the remote's code kept as detail: ${JSON.stringify(dom.detail)}`);
    check(dom.button === 'Try again', `a "Try again" button is offered (got ${JSON.stringify(dom.button)})`);
    check(!dom.chat && weavyRequests.length === 0, 'nothing mounted, no request reached Weavy before trying again');
    if (dom.button) {
      await page.click('[role=alert] button', { timeout: TIMEOUT }).catch(() => {});
      await page.waitForFunction(() => document.getElementById('app')?.dataset.state !== 'error', null, { timeout: TIMEOUT }).catch(() => {});
      await settled();
    }
  }

  const state = await page.evaluate(() => document.getElementById('app')?.dataset.state);
  check(state === sc.expect, `#app reached state "${sc.expect}" (got "${state}")`);
  const states = await page.evaluate(() => window.__smoke.states);

  const calls = await page.evaluate(() => window.__smoke.bridgeCalls);
  const invokes = calls.filter((c) => c.name === 'invoke');
  const tokenCalls = invokes.filter((c) => c.payload?.path === '/resolvers/token');
  const chatCalls = invokes.filter((c) => c.payload?.path === '/resolvers/chat');
  if (sc.bridge) {
    check(calls.some((c) => c.name === 'getContext'), 'the bridge was asked for the Forge context');
    const first = tokenCalls[0]?.payload;
    check(
      first && first.method === 'POST' && first.body?.refresh === false && first.invokeType === 'ui-remote-fetch',
      `invokeRemote({path:"/resolvers/token", method:"POST", body:{refresh:false}}) went through the real @forge/bridge (got ${JSON.stringify(first)})`,
    );
    const wantBody = JSON.stringify(sc.chatBody ?? PAGE_BODY);
    const wantChats = sc.chatCalls ?? 1;
    const chatCall = chatCalls[0]?.payload;
    check(
      chatCalls.length === wantChats &&
        chatCalls.every((c) => c.payload.method === 'POST' && JSON.stringify(c.payload.body) === wantBody && c.payload.invokeType === 'ui-remote-fetch'),
      `${wantChats} invokeRemote({path:"/resolvers/chat", method:"POST", body:${wantBody}}) through the real @forge/bridge, the body from the context (got ${chatCalls.length}: ${JSON.stringify(chatCall)})`,
    );
    if (sc.tokenCalls) check(tokenCalls.length === sc.tokenCalls, `${sc.tokenCalls} first-token calls, one per try (${tokenCalls.length})`);
    const parallel = await page.evaluate(() => window.__smoke.parallel);
    check(parallel, 'the first token call and the chat call were both made before either was answered');
    const other = invokes.filter((c) => !tokenCalls.includes(c) && !chatCalls.includes(c));
    check(other.length === 0, `no other resolver was called${other.length ? `: ${other.map((c) => c.payload?.path).join(', ')}` : ''}`);
  }

  if (sc.busy) {
    // The note while the chat call waits, then the chat; the second call made
    // no earlier than Retry-After allows.
    const busy = states.find((s) => s.state === 'busy');
    check(busy && busy.text === sc.busy, `"${sc.busy}" shown while waiting (states: ${states.map((s) => `${s.state}${s.text ? ` "${s.text}"` : ''}`).join(' → ')})`);
    const after = states.findIndex((s) => s.state === 'mounted');
    check(busy && after > states.indexOf(busy), 'the page went from the busy note to the mounted chat');
    const gap = chatCalls.length >= 2 ? chatCalls[1].at - chatCalls[0].at : NaN;
    check(gap >= sc.busyAtLeastMs, `the chat was called again ${gap} ms after the busy answer (at least ${sc.busyAtLeastMs} ms)`);
    check(!states.some((s) => s.state === 'error'), 'no error was shown on the way');
  } else if (sc.bridge) {
    check(!states.some((s) => s.state === 'busy'), 'no busy note');
  }

  if (sc.expect === 'mounted') {
    await page
      .waitForFunction(() => document.querySelector('wy-chat')?.shadowRoot?.querySelector('wy-conversation'), null, { timeout: TIMEOUT })
      .catch(() => {});
    const dom = await page.evaluate(() => {
      const chat = document.querySelector('#app > wy-chat');
      return {
        defined: Boolean(customElements.get('wy-chat')),
        inDom: Boolean(chat),
        upgraded: Boolean(chat && chat.constructor !== HTMLElement),
        rendered: Boolean(chat?.shadowRoot?.querySelector('wy-conversation')),
        uid: chat?.getAttribute('uid'),
        uidProperty: chat?.uid,
        hasName: chat?.hasAttribute('name') ?? null,
        alert: document.querySelector('[role=alert]')?.textContent ?? null,
        weavyUrl: document.getElementById('app')?.dataset.weavyUrl,
      };
    });
    check(dom.defined, 'custom element wy-chat is defined');
    check(dom.inDom && dom.upgraded, '<wy-chat> is in the DOM and upgraded');
    check(dom.rendered, '<wy-chat> rendered its shadow DOM (wy-conversation)');
    check(dom.uid === String(APP_ID), `uid attribute = "${APP_ID}", the chat resolver's app_id (got ${JSON.stringify(dom.uid)})`);
    check(dom.uidProperty === APP_ID, `the UIKit read the uid as the number ${APP_ID} (got ${JSON.stringify(dom.uidProperty)})`);
    check(dom.hasName === false, 'no name attribute on <wy-chat>');
    check(dom.alert === null, `no error message shown (got ${JSON.stringify(dom.alert)})`);
    check(dom.weavyUrl === weavyOrigin, `page uses the baked Weavy URL ${weavyOrigin}`);
    // The UIKit used the token from the tokenFactory towards Weavy.
    const deadline = Date.now() + TIMEOUT;
    while (!weavyRequests.some((r) => r.authorization === 'Bearer wyu_test') && Date.now() < deadline) await page.waitForTimeout(100);
    check(
      weavyRequests.some((r) => r.authorization === 'Bearer wyu_test'),
      `the UIKit called Weavy with "Authorization: Bearer wyu_test" (${weavyRequests.length} Weavy requests, e.g. ${weavyRequests.map((r) => `${r.method} ${new URL(r.url).pathname}`).slice(0, 3).join(', ')})`,
    );
    // With a numeric uid the UIKit reads the app and never creates or updates
    // one with the user's token.
    const appPath = `/api/apps/${APP_ID}`;
    const until = Date.now() + TIMEOUT;
    while (!weavyRequests.some((r) => r.method === 'GET' && new URL(r.url).pathname === appPath) && Date.now() < until) await page.waitForTimeout(100);
    check(
      weavyRequests.some((r) => r.method === 'GET' && new URL(r.url).pathname === appPath),
      `the UIKit asked Weavy for the app: GET ${appPath}`,
    );
    if (sc.refreshed) {
      const want = `Bearer ${sc.refreshed}_1`;
      const until = Date.now() + TIMEOUT;
      while (!weavyRequests.some((r) => r.authorization === want) && Date.now() < until) await page.waitForTimeout(100);
      const refreshCalls = (await page.evaluate(() => window.__smoke.bridgeCalls)).filter((c) => c.name === 'invoke' && c.payload?.body?.refresh === true);
      check(refreshCalls.length >= 1, `after Weavy's 401 the UIKit asked for a refresh: invokeRemote body {refresh:true} (${refreshCalls.length} call(s))`);
      check(weavyRequests.some((r) => r.authorization === want), `the UIKit retried Weavy with the refreshed token (${want})`);
      const alert = await page.evaluate(() => document.querySelector('[role=alert]')?.textContent ?? null);
      check(alert === null, `still no error message after the refresh (got ${JSON.stringify(alert)})`);
    }
    await page.waitForTimeout(1000); // let late errors surface
    const writes = weavyRequests.filter((r) => /^\/api\/apps(\/|$)/.test(new URL(r.url).pathname) && r.method !== 'GET');
    check(writes.length === 0, `no app was created or updated in Weavy (no PUT/POST/PATCH on /api/apps)${writes.length ? `: ${writes.map((r) => `${r.method} ${new URL(r.url).pathname}`).join(', ')}` : ''}`);
  } else {
    const dom = await page.evaluate(() => ({
      alert: document.querySelector('[role=alert]')?.textContent ?? '',
      detail: document.querySelector('[role=alert] .detail')?.textContent ?? null,
      button: Boolean(document.querySelector('[role=alert] button')),
      chat: Boolean(document.querySelector('wy-chat')),
    }));
    check(dom.alert.startsWith(sc.message), `message shown: ${JSON.stringify(dom.alert)}`);
    if (sc.detail) check(dom.detail === sc.detail, `the remote's code kept as detail: ${JSON.stringify(dom.detail)}`);
    if (sc.retryButton !== undefined) check(dom.button === sc.retryButton, sc.retryButton ? 'a "Try again" button is offered' : 'no "Try again" button (trying again cannot help)');
    check(!dom.chat, 'no <wy-chat> mounted');
    check(weavyRequests.length === 0, `no request reached Weavy (${weavyRequests.length})`);
    if (sc.bridge) check(tokenCalls.length === 1, `one token call (${tokenCalls.length})`);
    await page.waitForTimeout(sc.waitForRetries ? 2500 : 300);
    if (sc.waitForRetries) {
      // A refusal is final: the page does not call the chat again on its own.
      const later = (await page.evaluate(() => window.__smoke.bridgeCalls)).filter((c) => c.name === 'invoke' && c.payload?.path === '/resolvers/chat');
      check(later.length === 1, `still one chat call 2.5 s later: no retry (${later.length})`);
    }
  }

  const leaked = weavyRequests.filter((r) => /wys_/.test(r.authorization) || /wys_/.test(r.url));
  check(leaked.length === 0, 'no wys_ key was ever sent to Weavy');
  const csp = await page.evaluate(() => window.__smoke.csp);
  check(csp.length === 0, `no CSP violations${csp.length ? `: ${csp.slice(0, 3).join('; ')}` : ''}`);
  check(foreign.length === 0, `no request left loopback except to Weavy${foreign.length ? `: ${foreign.slice(0, 3).join(', ')}` : ''}`);
  check(
    consoleErrors.length === 0,
    `no console errors (ignored ${ignored.length} "Failed to load resource" lines for Weavy requests failed on purpose)${consoleErrors.length ? `:\n      ${consoleErrors.slice(0, 5).join('\n      ')}` : ''}`,
  );

  await context.close();
  return checks;
}

async function main() {
  if (!fs.existsSync(path.join(DIST, 'index.html'))) {
    console.error(`smoke: ${DIST}/index.html is missing: run "npm run build" first`);
    process.exit(2);
  }
  if (!fs.existsSync(CHROMIUM)) {
    console.error(`smoke: no Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)`);
    process.exit(2);
  }
  const weavyOrigin = bakedWeavyUrl();
  const csp = cspFor(weavyOrigin);
  const server = await serve(csp);
  const base = `http://127.0.0.1:${server.address().port}`;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  console.log(`smoke: ${await browser.version()} · serving ${path.relative(process.cwd(), DIST) || DIST} at ${base} · Weavy URL ${weavyOrigin}`);
  console.log(`smoke: CSP ${csp}`);

  let failed = 0;
  try {
    for (const sc of SCENARIOS) {
      const checks = await run(browser, base, weavyOrigin, sc);
      const bad = checks.filter((c) => !c.ok).length;
      failed += bad;
      console.log(`\n${bad ? 'FAIL' : 'PASS'}  ${sc.name}`);
      for (const c of checks) console.log(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.what}`);
    }
  } finally {
    await browser.close();
    server.close();
  }
  console.log(`\nsmoke: ${failed ? `${failed} check(s) FAILED` : `all ${SCENARIOS.length} scenarios passed`}`);
  process.exit(failed ? 1 : 0);
}

main().catch((err) => {
  console.error('smoke: setup failed:', err);
  process.exit(2);
});
