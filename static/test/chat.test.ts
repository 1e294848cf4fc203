import { beforeEach, describe, expect, it, vi } from 'vitest';

// The real @forge/bridge throws on import outside a Forge iframe; the tests
// replace it, and remote.ts uses its invokeRemote by default.
vi.mock('@forge/bridge', () => ({ invokeRemote: vi.fn() }));

import { invokeRemote } from '@forge/bridge';
import { CHAT_PATH, appIdOf, fetchChat, openChat } from '../src/chat';
import { RemoteError } from '../src/errors';
import type { InvokeRemote } from '../src/remote';
import { TOKEN_PATH } from '../src/token';

const invoke = vi.mocked(invokeRemote);

const ok = (body: unknown) => ({ status: 200, headers: {}, body });
const fail = (status: number, code: string, message: string) => ({
  status,
  headers: {},
  body: { error: { code, message } },
});
const CHAT = { app_id: 4711, uid: 'cf-a436116f-page-98307-9f2c', name: 'Project plan' };

beforeEach(() => {
  invoke.mockReset();
});

describe('fetchChat', () => {
  it('POSTs an empty body to /resolvers/chat through the bridge', async () => {
    invoke.mockResolvedValue(ok(CHAT) as never);

    await expect(fetchChat()).resolves.toEqual({ appId: '4711', uid: CHAT.uid, name: 'Project plan' });

    expect(invoke).toHaveBeenCalledTimes(1);
    const input = invoke.mock.calls[0][0] as unknown as Record<string, unknown>;
    expect(input).toMatchObject({ path: CHAT_PATH, method: 'POST' });
    expect(CHAT_PATH).toBe('/resolvers/chat');
    // Nothing the page knows picks the chat: the body is exactly {}.
    expect(input.body).toEqual({});
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
    const opened = openChat(remote.fn);
    // Let the calls start; none has been answered yet.
    await Promise.resolve();
    expect(remote.calls.map((c) => c.path).sort()).toEqual([CHAT_PATH, TOKEN_PATH].sort());
    expect(remote.calls.find((c) => c.path === TOKEN_PATH)?.body).toEqual({ refresh: false });
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
