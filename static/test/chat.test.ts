import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

// The real @forge/bridge throws on import outside a Forge iframe; the tests
// replace it, and remote.ts uses its invokeRemote by default, chat.ts its
// view.getContext.
vi.mock('@forge/bridge', () => ({ invokeRemote: vi.fn(), view: { getContext: vi.fn() } }));

import { invokeRemote, view } from '@forge/bridge';
import { BUSY, CHAT_PATH, appIdOf, busyDelay, chatRequestOf, fetchChat, fetchChatPatiently, openChat } from '../src/chat';
import { RemoteError } from '../src/errors';
import { retryAfterOf, type InvokeRemote } from '../src/remote';
import { TOKEN_PATH } from '../src/token';

const invoke = vi.mocked(invokeRemote);
const getContext = vi.mocked(view.getContext);

const ok = (body: unknown) => ({ status: 200, headers: {}, body });
const fail = (status: number, code: string, message: string) => ({
  status,
  headers: {},
  body: { error: { code, message } },
});
const CHAT = { app_id: 4711, uid: 'cf-a436116f-page-98307-9f2c', name: 'Project plan' };

beforeEach(() => {
  invoke.mockReset();
  getContext.mockReset();
});

afterEach(() => {
  vi.useRealTimers();
});

/** A Forge context of a Confluence page macro (what view.getContext() gives). */
const PAGE_CONTEXT = {
  cloudId: 'a436116f-02ce-4520-8fbb-7301462a1674',
  localId: 'l1',
  moduleKey: 'weavy-chat-macro',
  accountId: '5b10ac8d82e05b22cc7d4ef5',
  extension: { type: 'macro', content: { id: '98307', type: 'page' }, space: { key: 'DEV', id: '65539' } },
};
const busy = (headers: unknown, message = 'Confluence answered 429') => ({
  status: 503,
  headers,
  body: { error: { code: 'confluence_busy', message } },
});

describe('fetchChat', () => {
  it('POSTs an empty body to /resolvers/chat through the bridge when it knows nothing', async () => {
    invoke.mockResolvedValue(ok(CHAT) as never);

    await expect(fetchChat()).resolves.toEqual({ appId: '4711', uid: CHAT.uid, name: 'Project plan' });

    expect(invoke).toHaveBeenCalledTimes(1);
    const input = invoke.mock.calls[0][0] as unknown as Record<string, unknown>;
    expect(input).toMatchObject({ path: CHAT_PATH, method: 'POST' });
    expect(CHAT_PATH).toBe('/resolvers/chat');
    expect(input.body).toEqual({});
  });

  it('POSTs the page the context names', async () => {
    invoke.mockResolvedValue(ok(CHAT) as never);
    await fetchChat(undefined, { contentId: '98307', contentType: 'page', spaceKey: 'DEV' });
    expect(invoke.mock.calls[0][0]).toMatchObject({ body: { contentId: '98307', contentType: 'page', spaceKey: 'DEV' } });
  });

  it('accepts a body the bridge left as a JSON string, and ignores fields it does not use', async () => {
    invoke.mockResolvedValue(ok(JSON.stringify({ ...CHAT, app_id: 12, extra: { x: 1 } })) as never);
    await expect(fetchChat()).resolves.toMatchObject({ appId: '12' });
  });

  it('does not need uid or name', async () => {
    invoke.mockResolvedValue(ok({ app_id: 9 }) as never);
    await expect(fetchChat()).resolves.toEqual({ appId: '9', uid: undefined, name: undefined });
  });

  it('uses an injected invoke instead of the bridge', async () => {
    const injected = vi.fn().mockResolvedValue(ok(CHAT));
    await expect(fetchChat(injected)).resolves.toMatchObject({ appId: '4711' });
    expect(injected).toHaveBeenCalledWith(expect.objectContaining({ path: '/resolvers/chat', body: {} }));
    expect(invoke).not.toHaveBeenCalled();
  });

  it.each([
    [403, 'anonymous', 'this chat needs a signed-in Atlassian account'],
    [403, 'license_inactive', 'the app licence for this site is not active'],
    [403, 'no_access', 'you cannot view this content'],
    [403, 'user_token_missing', 'the invocation carries no user token: add appUserToken to the endpoint'],
    [503, 'confluence_unavailable', 'Confluence did not answer in time'],
    [403, 'no_user', 'this resolver needs a signed-in user; the invocation has no principal'],
    [502, 'weavy_unavailable', 'Weavy answered 500'],
    [503, 'store_unavailable', 'the store is unavailable'],
    [504, 'weavy_timeout', 'Weavy did not answer in time'],
  ])('HTTP %i %s → a RemoteError with that code, status and message', async (status, code, message) => {
    invoke.mockResolvedValue(fail(status, code, message) as never);
    const err = (await fetchChat().catch((e: unknown) => e)) as RemoteError;
    expect(err).toBeInstanceOf(RemoteError);
    expect(err.code).toBe(code);
    expect(err.status).toBe(status);
    expect(err.message).toBe(`${code} — ${message}`);
  });

  it('wraps a rejected bridge call, reading a remote error it carries', async () => {
    invoke.mockRejectedValue(new Error('Remote invocation timed out') as never);
    await expect(fetchChat()).rejects.toThrow('remote_call_failed — Remote invocation timed out');
    invoke.mockRejectedValue(new Error('{"error":{"code":"no_access","message":"no"}}') as never);
    await expect(fetchChat()).rejects.toMatchObject({ code: 'no_access' });
  });

  it.each([
    ['a uid string instead of an id', 'confluence-a436116f-page-98307', 'string'],
    ['a string of digits', '4711', 'string'],
    ['zero', 0, '0'],
    ['a negative id', -5, '-5'],
    ['a fraction', 47.5, '47.5'],
    ['beyond 2^53 - 1', 2 ** 53, String(2 ** 53)],
    ['null', null, 'null'],
    ['missing', undefined, 'undefined'],
  ])('refuses an app_id that is %s (the UIKit would upsert or open another app)', async (_label, appId, shown) => {
    invoke.mockResolvedValue(ok({ ...CHAT, app_id: appId }) as never);
    const err = (await fetchChat().catch((e: unknown) => e)) as RemoteError;
    expect(err).toBeInstanceOf(RemoteError);
    expect(err.code).toBe('invalid_response');
    expect(err.message).toContain(`app_id: ${shown}`);
  });

  it('refuses a 2xx answer without a JSON object', async () => {
    invoke.mockResolvedValue(ok('not json') as never);
    await expect(fetchChat()).rejects.toThrow(/^invalid_response — /);
    invoke.mockResolvedValue(ok([4711]) as never);
    await expect(fetchChat()).rejects.toThrow(/^invalid_response — /);
  });
});

describe('appIdOf', () => {
  it('gives the decimal string the UIKit parses back to the same number', () => {
    for (const id of [1, 4711, 2147483648, Number.MAX_SAFE_INTEGER]) {
      const s = appIdOf(id);
      expect(s).toMatch(/^[0-9]+$/);
      expect(parseInt(s)).toBe(id); // what @weavy/uikit-web's toIntOrString does
    }
  });
});

/**
 * A fake remote that answers each resolver from a table, and holds every
 * answer until release() so a test can see which calls were made before any
 * of them was answered.
 */
function heldRemote(answers: Record<string, unknown>) {
  const calls: { path: string; body: unknown }[] = [];
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const fn: InvokeRemote = async (input) => {
    calls.push({ path: input.path, body: input.body });
    await released;
    if (!(input.path in answers)) throw new Error(`unexpected path ${input.path}`);
    return answers[input.path];
  };
  return { fn, calls, release };
}

describe('openChat', () => {
  it('asks for the chat and the first token in parallel', async () => {
    const remote = heldRemote({ [CHAT_PATH]: ok(CHAT), [TOKEN_PATH]: ok({ access_token: 'wyu_first', expires_in: 3600 }) });
    const opened = openChat(remote.fn, { context: Promise.resolve(PAGE_CONTEXT) });
    // Let the calls start; none has been answered yet.
    await new Promise((r) => setTimeout(r, 0));
    expect(remote.calls.map((c) => c.path).sort()).toEqual([CHAT_PATH, TOKEN_PATH].sort());
    expect(remote.calls.find((c) => c.path === TOKEN_PATH)?.body).toEqual({ refresh: false });
    expect(remote.calls.find((c) => c.path === CHAT_PATH)?.body).toEqual({ contentId: '98307', contentType: 'page', spaceKey: 'DEV' });
    remote.release();
    await expect(opened).resolves.toEqual({ token: 'wyu_first', chat: { appId: '4711', uid: CHAT.uid, name: 'Project plan' } });
  });

  it('uses the bridge by default', async () => {
    invoke.mockImplementation((async (input: { path: string }) =>
      input.path === CHAT_PATH ? ok(CHAT) : ok({ access_token: 'wyu_b', expires_in: 60 })) as never);
    await expect(openChat()).resolves.toMatchObject({ token: 'wyu_b', chat: { appId: '4711' } });
    expect(invoke).toHaveBeenCalledTimes(2);
  });

  it.each([
    ['the chat is refused, the token is fine', 'no_access', fail(403, 'no_access', 'no'), ok({ access_token: 'wyu_x', expires_in: 60 })],
    ['the token fails, the chat is fine', 'weavy_unavailable', ok(CHAT), fail(502, 'weavy_unavailable', 'down')],
    ['both fail: the chat error wins', 'anonymous', fail(403, 'anonymous', 'a'), fail(502, 'weavy_unavailable', 'down')],
    ['both are refused for the licence', 'license_inactive', fail(403, 'license_inactive', 'l'), fail(403, 'license_inactive', 'l')],
    ['the chat answer has no app id', 'invalid_response', ok({ uid: 'confluence-x-page-1' }), ok({ access_token: 'wyu_x', expires_in: 60 })],
  ])('%s → %s', async (_label, code, chatAnswer, tokenAnswer) => {
    const remote = heldRemote({ [CHAT_PATH]: chatAnswer, [TOKEN_PATH]: tokenAnswer });
    remote.release();
    await expect(openChat(remote.fn)).rejects.toMatchObject({ code });
    expect(remote.calls).toHaveLength(2);
  });

  it('prefers the chat error even when the token error arrives first', async () => {
    let answerChat!: () => void;
    const chatHeld = new Promise<void>((r) => (answerChat = r));
    const fn: InvokeRemote = async (input) => {
      if (input.path === TOKEN_PATH) return fail(503, 'store_unavailable', 's');
      await chatHeld;
      return fail(403, 'no_access', 'n');
    };
    const opened = openChat(fn).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 0)); // the token error has settled by now
    answerChat();
    await expect(opened).resolves.toMatchObject({ code: 'no_access' });
  });
});

describe('chatRequestOf', () => {
  it('takes the content id and type and the space key from the context', () => {
    expect(chatRequestOf(PAGE_CONTEXT)).toEqual({ contentId: '98307', contentType: 'page', spaceKey: 'DEV' });
    const blog = { extension: { type: 'macro', content: { id: '1234', type: 'blogpost' }, space: { key: '~5b10ac8d' } } };
    expect(chatRequestOf(blog)).toEqual({ contentId: '1234', contentType: 'blogpost', spaceKey: '~5b10ac8d' });
  });

  it('leaves out what the context lacks', () => {
    // A space page: a space, no content.
    expect(chatRequestOf({ extension: { type: 'confluence:spacePage', space: { key: 'DEV', id: '65539' } } })).toEqual({ spaceKey: 'DEV' });
    // A global page: neither.
    expect(chatRequestOf({ extension: { type: 'confluence:globalPage' } })).toEqual({});
    // Content without a space (or a space without a key).
    expect(chatRequestOf({ extension: { content: { id: '7', type: 'page' }, space: { id: '65539' } } })).toEqual({ contentId: '7', contentType: 'page' });
  });

  it('sends no content that is not a page or blog post, and no id without its type', () => {
    expect(chatRequestOf({ extension: { content: { id: '7', type: 'whiteboard' }, space: { key: 'DEV' } } })).toEqual({ spaceKey: 'DEV' });
    expect(chatRequestOf({ extension: { content: { id: '7' } } })).toEqual({});
    expect(chatRequestOf({ extension: { content: { type: 'page' } } })).toEqual({});
    expect(chatRequestOf({ extension: { content: { id: '', type: 'page' }, space: { key: '' } } })).toEqual({});
  });

  it('gives {} for no context at all', () => {
    for (const ctx of [undefined, null, 'x', 42, [], {}, { extension: null }, { extension: 'macro' }]) {
      expect(chatRequestOf(ctx)).toEqual({});
    }
  });
});

describe('the chat body in openChat', () => {
  const tokenOk = ok({ access_token: 'wyu_t', expires_in: 60 });
  const bodiesOfChat = () =>
    invoke.mock.calls.map((c) => c[0] as unknown as { path: string; body: unknown }).filter((c) => c.path === CHAT_PATH).map((c) => c.body);
  const answerAll = () => invoke.mockImplementation((async (input: { path: string }) => (input.path === CHAT_PATH ? ok(CHAT) : tokenOk)) as never);

  it("carries contentId, contentType and spaceKey from view.getContext()", async () => {
    answerAll();
    getContext.mockResolvedValue(PAGE_CONTEXT as never);
    await openChat();
    expect(getContext).toHaveBeenCalledTimes(1);
    expect(bodiesOfChat()).toEqual([{ contentId: '98307', contentType: 'page', spaceKey: 'DEV' }]);
  });

  it('uses a context it is given instead of asking the bridge', async () => {
    answerAll();
    await openChat(undefined, { context: Promise.resolve({ extension: { space: { key: 'OPS' } } }) });
    expect(getContext).not.toHaveBeenCalled();
    expect(bodiesOfChat()).toEqual([{ spaceKey: 'OPS' }]);
  });

  it('sends {} when getContext fails or gives nothing', async () => {
    answerAll();
    getContext.mockRejectedValueOnce(new Error('no context') as never);
    await expect(openChat()).resolves.toMatchObject({ chat: { appId: '4711' } });
    getContext.mockResolvedValueOnce(undefined as never);
    await expect(openChat()).resolves.toMatchObject({ chat: { appId: '4711' } });
    await expect(openChat(undefined, { context: Promise.reject(new Error('no')) })).resolves.toMatchObject({ chat: { appId: '4711' } });
    expect(bodiesOfChat()).toEqual([{}, {}, {}]);
  });
});

describe('retryAfterOf', () => {
  it('reads Retry-After from a plain object, whatever the case of its key', () => {
    expect(retryAfterOf({ 'retry-after': '7' })).toBe(7);
    expect(retryAfterOf({ 'Retry-After': '7' })).toBe(7);
    expect(retryAfterOf({ 'content-type': 'application/json', 'RETRY-AFTER': ' 12 ' })).toBe(12);
  });

  it('reads Retry-After from a Headers-like object', () => {
    expect(retryAfterOf(new Headers({ 'Retry-After': '3' }))).toBe(3);
    const get = vi.fn((name: string) => (name === 'retry-after' ? '4' : null));
    expect(retryAfterOf({ get })).toBe(4);
  });

  it('reads an array value, a number, a value the bridge joined, and an HTTP date', () => {
    expect(retryAfterOf({ 'retry-after': ['9'] })).toBe(9);
    expect(retryAfterOf({ 'retry-after': 2 })).toBe(2);
    expect(retryAfterOf({ 'retry-after': '5,5' })).toBe(5);
    const now = Date.parse('Wed, 21 Oct 2015 07:28:00 GMT');
    expect(retryAfterOf({ 'retry-after': 'Wed, 21 Oct 2015 07:28:30 GMT' }, now)).toBe(30);
    expect(retryAfterOf({ 'retry-after': 'Wed, 21 Oct 2015 07:00:00 GMT' }, now)).toBe(0);
  });

  it('gives undefined when there is no usable header', () => {
    for (const h of [undefined, null, 'retry-after: 5', {}, { 'retry-after': '' }, { 'retry-after': 'soon' }, { 'retry-after': '1.5' }, { 'retry-after': -1 }, new Headers()]) {
      expect(retryAfterOf(h)).toBeUndefined();
    }
  });

  it('is carried on the RemoteError of a non-2xx answer, in either shape', async () => {
    invoke.mockResolvedValueOnce(busy({ 'retry-after': '8' }) as never);
    await expect(fetchChat()).rejects.toMatchObject({ code: 'confluence_busy', status: 503, retryAfter: 8 });
    invoke.mockResolvedValueOnce(busy(new Headers({ 'Retry-After': '9' })) as never);
    await expect(fetchChat()).rejects.toMatchObject({ code: 'confluence_busy', status: 503, retryAfter: 9 });
    invoke.mockResolvedValueOnce(busy({}) as never);
    const err = (await fetchChat().catch((e: unknown) => e)) as RemoteError;
    expect(err.retryAfter).toBeUndefined();
  });
});

describe('busyDelay', () => {
  it('uses Retry-After between 1 and 60 s, else 5 s', () => {
    expect(busyDelay(undefined)).toBe(5);
    expect(busyDelay(NaN)).toBe(5);
    expect(busyDelay(1)).toBe(1);
    expect(busyDelay(17)).toBe(17);
    expect(busyDelay(0)).toBe(1);
    expect(busyDelay(3600)).toBe(60);
  });
});

describe('a busy Confluence', () => {
  const tokenOk = ok({ access_token: 'wyu_t', expires_in: 60 });
  const chatCalls = () => invoke.mock.calls.filter((c) => (c[0] as { path: string }).path === CHAT_PATH).length;

  it('shows the wait, calls the chat again after Retry-After seconds and opens it', async () => {
    vi.useFakeTimers();
    let chatAnswers = [busy({ 'retry-after': '3' }), ok(CHAT)];
    invoke.mockImplementation((async (input: { path: string }) => (input.path === CHAT_PATH ? chatAnswers.shift() : tokenOk)) as never);
    const onBusy = vi.fn();

    const opened = openChat(undefined, { context: Promise.resolve(PAGE_CONTEXT), onBusy });
    let done = false;
    opened.then(() => (done = true), () => (done = true));

    await vi.advanceTimersByTimeAsync(0);
    expect(chatCalls()).toBe(1);
    expect(onBusy).toHaveBeenCalledWith(3, 1);

    await vi.advanceTimersByTimeAsync(2999);
    expect(chatCalls()).toBe(1);
    expect(done).toBe(false);

    await vi.advanceTimersByTimeAsync(1);
    await expect(opened).resolves.toEqual({ token: 'wyu_t', chat: { appId: '4711', uid: CHAT.uid, name: 'Project plan' } });
    expect(chatCalls()).toBe(2);
    expect(onBusy).toHaveBeenCalledTimes(1);
    // The same body the second time; the token was asked for once.
    const bodies = invoke.mock.calls.map((c) => c[0] as unknown as { path: string; body: unknown });
    expect(bodies.filter((c) => c.path === CHAT_PATH).map((c) => c.body)).toEqual([
      { contentId: '98307', contentType: 'page', spaceKey: 'DEV' },
      { contentId: '98307', contentType: 'page', spaceKey: 'DEV' },
    ]);
    expect(bodies.filter((c) => c.path === TOKEN_PATH)).toHaveLength(1);
    chatAnswers = [];
  });

  it('waits 5 s without Retry-After, at most 60 s, and reads a Headers-like answer', async () => {
    vi.useFakeTimers();
    const answers = [busy({}), busy(new Headers({ 'Retry-After': '600' })), ok(CHAT)];
    const fn = vi.fn(async () => answers.shift());
    const onBusy = vi.fn();
    const got = fetchChatPatiently(fn as unknown as InvokeRemote, {}, onBusy);
    await vi.advanceTimersByTimeAsync(4999);
    expect(fn).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(fn).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(59_999);
    expect(fn).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(1);
    await expect(got).resolves.toMatchObject({ appId: '4711' });
    expect(onBusy.mock.calls).toEqual([
      [5, 1],
      [60, 2],
    ]);
  });

  it(`gives up after ${BUSY.maxTries} busy answers with the busy error`, async () => {
    vi.useFakeTimers();
    const fn = vi.fn(async () => busy({ 'retry-after': '1' }));
    const got = fetchChatPatiently(fn as unknown as InvokeRemote, {}).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(fn).toHaveBeenCalledTimes(BUSY.maxTries);
    await expect(got).resolves.toMatchObject({ code: 'confluence_busy', status: 503, retryAfter: 1 });
  });

  it('stops waiting as soon as the remote answers something else', async () => {
    vi.useFakeTimers();
    const answers = [busy({ 'retry-after': '1' }), fail(503, 'confluence_unavailable', 'Confluence timed out')];
    const fn = vi.fn(async () => answers.shift());
    const got = fetchChatPatiently(fn as unknown as InvokeRemote, {}).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(fn).toHaveBeenCalledTimes(2);
    await expect(got).resolves.toMatchObject({ code: 'confluence_unavailable', status: 503 });
  });
});

describe('refusals are not retried', () => {
  it.each([
    ['no_access', 403, "you cannot view page 98307"],
    ['user_token_missing', 403, 'no user token'],
    ['confluence_unavailable', 503, 'Confluence timed out'],
  ])('%s: one chat call, the error thrown at once', async (code, status, message) => {
    vi.useFakeTimers();
    const fn = vi.fn(async (input: { path: string }) => (input.path === CHAT_PATH ? fail(status, code, message) : ok({ access_token: 'wyu_t', expires_in: 60 })));
    const onBusy = vi.fn();
    const got = openChat(fn as unknown as InvokeRemote, { context: Promise.resolve(PAGE_CONTEXT), onBusy }).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(0);
    await expect(got).resolves.toMatchObject({ code, status });
    await vi.advanceTimersByTimeAsync(120_000);
    expect(fn.mock.calls.filter((c) => c[0].path === CHAT_PATH)).toHaveLength(1);
    expect(onBusy).not.toHaveBeenCalled();
  });
});
