// Token logic for the Weavy UIKit's tokenFactory, kept apart from the DOM and
// the Weavy bundle so it can be unit-tested with a mocked bridge.
//
// The remote (forge-remote) answers POST /resolvers/token with
//   2xx  {"access_token":"wyu_…","expires_in":N}
//   else {"error":{"code":"snake_case","message":"…"}}
// @forge/bridge's invokeRemote does NOT reject on a non-2xx answer: it resolves
// with {status, headers, body}. So the status is checked here.
import { invokeRemote } from '@forge/bridge';
import { TokenError } from './errors';

export { TokenError };

/** The subset of @forge/bridge's invokeRemote that this module uses. */
export type InvokeRemote = (input: {
  path: string;
  method: 'POST';
  headers?: Record<string, string>;
  body?: unknown;
}) => Promise<unknown>;

export const TOKEN_PATH = '/resolvers/token';

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function parseBody(body: unknown): unknown {
  if (typeof body !== 'string') return body;
  try {
    return JSON.parse(body);
  } catch {
    return body;
  }
}

/** Reads {"error":{"code","message"}} out of an answer body, if it is there. */
function remoteError(body: unknown): { code: string; message: string } | undefined {
  const b = parseBody(body);
  if (!isObject(b) || !isObject(b.error)) return undefined;
  const { code, message } = b.error;
  if (typeof code !== 'string' || code === '') return undefined;
  return { code, message: typeof message === 'string' && message !== '' ? message : 'no message' };
}

/**
 * Checks that a value is a Weavy user access token and returns it.
 * Refuses an API key (wys_…) and anything else: neither may reach the UIKit.
 * The refused value itself is never put in the error message.
 */
export function assertUserToken(token: unknown): string {
  if (typeof token === 'string' && token.startsWith('wys_')) {
    throw new TokenError('invalid_token', 'the remote answered a Weavy API key (wys_…) instead of a user token; refused');
  }
  if (typeof token !== 'string' || !/^wyu_\S+$/.test(token)) {
    throw new TokenError('invalid_token', 'the remote did not answer a Weavy user token (wyu_…)');
  }
  return token;
}

/**
 * Asks the remote for a Weavy access token for the signed-in user and returns
 * the bare "wyu_…" string, as the UIKit's tokenFactory must.
 * `refresh` = true asks for a new token (the UIKit does that after a 401/403).
 */
export async function fetchWeavyToken(refresh: boolean, invoke: InvokeRemote = invokeRemote as InvokeRemote): Promise<string> {
  let answer: unknown;
  try {
    answer = await invoke({
      path: TOKEN_PATH,
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: { refresh: refresh === true },
    });
  } catch (err) {
    // The bridge itself failed (timeout, unparsable answer, no remote …).
    const msg = err instanceof Error ? err.message : String(err);
    const inner = remoteError(msg);
    if (inner) throw new TokenError(inner.code, inner.message);
    throw new TokenError('remote_call_failed', msg.trim() || 'the call to the remote failed');
  }

  if (!isObject(answer)) {
    throw new TokenError('invalid_response', 'the bridge returned no response');
  }
  const status = answer.status;
  const body = parseBody(answer.body);

  if (typeof status !== 'number') {
    throw new TokenError('invalid_response', 'the bridge returned a response without an HTTP status');
  }
  if (status < 200 || status > 299) {
    const e = remoteError(body);
    if (e) throw new TokenError(e.code, e.message, status);
    throw new TokenError(`http_${status}`, `the remote answered HTTP ${status} without an error body`, status);
  }
  if (!isObject(body)) {
    throw new TokenError('invalid_response', `the remote answered HTTP ${status} without a JSON body`, status);
  }
  return assertUserToken(body.access_token);
}
