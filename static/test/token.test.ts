import { beforeEach, describe, expect, it, vi } from 'vitest';

// The real @forge/bridge throws on import outside a Forge iframe; the tests
// replace it, and remote.ts uses its invokeRemote by default.
vi.mock('@forge/bridge', () => ({ invokeRemote: vi.fn() }));

import { invokeRemote } from '@forge/bridge';
import { TOKEN_PATH, RemoteError, assertUserToken, fetchWeavyToken } from '../src/token';

const invoke = vi.mocked(invokeRemote);

const ok = (body: unknown) => ({ status: 200, headers: {}, body });
const fail = (status: number, code: string, message: string) => ({
  status,
  headers: {},
  body: { error: { code, message } },
});

beforeEach(() => {
  invoke.mockReset();
});

describe('fetchWeavyToken', () => {
  it('POSTs to /resolvers/token through the bridge with refresh passed through', async () => {
    invoke.mockResolvedValue(ok({ access_token: 'wyu_first', expires_in: 3600 }) as never);

    await fetchWeavyToken(false);
    await fetchWeavyToken(true);

    expect(invoke).toHaveBeenCalledTimes(2);
    expect(invoke.mock.calls[0][0]).toMatchObject({ path: TOKEN_PATH, method: 'POST', body: { refresh: false } });
    expect(invoke.mock.calls[1][0]).toMatchObject({ path: '/resolvers/token', method: 'POST', body: { refresh: true } });
  });

  it('returns the bare wyu_ string', async () => {
    invoke.mockResolvedValue(ok({ access_token: 'wyu_abc.DEF-123', expires_in: 3599 }) as never);
    await expect(fetchWeavyToken(false)).resolves.toBe('wyu_abc.DEF-123');
  });

  it('accepts a body the bridge left as a JSON string', async () => {
    invoke.mockResolvedValue(ok(JSON.stringify({ access_token: 'wyu_s', expires_in: 1 })) as never);
    await expect(fetchWeavyToken(false)).resolves.toBe('wyu_s');
  });

  it('uses an injected invoke instead of the bridge', async () => {
    const injected = vi.fn().mockResolvedValue(ok({ access_token: 'wyu_injected', expires_in: 60 }));
    await expect(fetchWeavyToken(true, injected)).resolves.toBe('wyu_injected');
    expect(injected).toHaveBeenCalledWith(expect.objectContaining({ body: { refresh: true } }));
    expect(invoke).not.toHaveBeenCalled();
  });

  it('throws the remote error code and message on a non-2xx answer', async () => {
    invoke.mockResolvedValue(fail(502, 'weavy_unavailable', 'Weavy answered 500') as never);
    const err = await fetchWeavyToken(false).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteError);
    expect((err as RemoteError).message).toBe('weavy_unavailable — Weavy answered 500');
    expect((err as RemoteError).code).toBe('weavy_unavailable');
    expect((err as RemoteError).status).toBe(502);
  });

  it.each([
    [403, 'no_user', 'this resolver needs a signed-in user; the invocation has no principal'],
    [429, 'refresh_rate_limited', 'too many token refreshes for this user; retry after 3 s'],
    [503, 'weavy_not_configured', 'WEAVY_URL and WEAVY_API_KEY are not set on the remote'],
  ])('HTTP %i → %s', async (status, code, message) => {
    invoke.mockResolvedValue(fail(status, code, message) as never);
    await expect(fetchWeavyToken(true)).rejects.toThrow(`${code} — ${message}`);
  });

  it('throws a useful error for a non-2xx answer without an error body', async () => {
    invoke.mockResolvedValue({ status: 500, headers: {}, body: undefined } as never);
    await expect(fetchWeavyToken(false)).rejects.toThrow('http_500 — the remote answered HTTP 500 without an error body');
  });

  it('wraps a rejected bridge call', async () => {
    invoke.mockRejectedValue(new Error('Remote invocation timed out') as never);
    await expect(fetchWeavyToken(false)).rejects.toThrow('remote_call_failed — Remote invocation timed out');
  });

  it('reads the remote error out of a rejected call that carries it', async () => {
    invoke.mockRejectedValue(new Error('{"error":{"code":"store_unavailable","message":"the store is unavailable"}}') as never);
    await expect(fetchWeavyToken(false)).rejects.toThrow('store_unavailable — the store is unavailable');
  });

  it('refuses an API key (wys_) without echoing it', async () => {
    invoke.mockResolvedValue(ok({ access_token: 'wys_SECRETKEY', expires_in: 3600 }) as never);
    const err = (await fetchWeavyToken(false).catch((e: unknown) => e)) as RemoteError;
    expect(err).toBeInstanceOf(RemoteError);
    expect(err.code).toBe('invalid_token');
    expect(err.message).toContain('API key');
    expect(err.message).not.toContain('SECRETKEY');
  });

  it.each([
    ['garbage string', 'Bearer nope'],
    ['empty string', ''],
    ['bare prefix', 'wyu_'],
    ['number', 42],
    ['missing', undefined],
  ])('refuses a non-wyu_ token (%s)', async (_label, token) => {
    invoke.mockResolvedValue(ok({ access_token: token, expires_in: 3600 }) as never);
    await expect(fetchWeavyToken(false)).rejects.toThrow(/^invalid_token — /);
  });

  it('refuses a 2xx answer with no usable body or status', async () => {
    invoke.mockResolvedValue(ok(undefined) as never);
    await expect(fetchWeavyToken(false)).rejects.toThrow(/^invalid_response — /);
    invoke.mockResolvedValue(undefined as never);
    await expect(fetchWeavyToken(false)).rejects.toThrow(/^invalid_response — /);
    invoke.mockResolvedValue({ body: { access_token: 'wyu_x' } } as never);
    await expect(fetchWeavyToken(false)).rejects.toThrow(/^invalid_response — /);
  });
});

describe('assertUserToken', () => {
  it('passes wyu_ tokens and refuses everything else', () => {
    expect(assertUserToken('wyu_ok')).toBe('wyu_ok');
    expect(() => assertUserToken('wys_key')).toThrow(RemoteError);
    expect(() => assertUserToken('wyu_has space')).toThrow(RemoteError);
    expect(() => assertUserToken(null)).toThrow(RemoteError);
  });
});
