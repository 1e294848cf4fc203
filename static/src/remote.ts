// One call to a resolver of the remote (forge-remote) through the Forge
// bridge, shared by the token and chat calls so that both read answers and
// errors the same way. Kept apart from the DOM and the Weavy bundle so it can
// be unit-tested with a mocked bridge.
//
// The remote answers POST /resolvers/<name> with
//   2xx  a JSON object
//   else {"error":{"code":"snake_case","message":"…"}}
// @forge/bridge's invokeRemote does NOT reject on a non-2xx answer: it resolves
// with {status, headers, body}. So the status is checked here.
import { invokeRemote } from '@forge/bridge';
import { RemoteError } from './errors';

/** The subset of @forge/bridge's invokeRemote that this app uses. */
export type InvokeRemote = (input: {
  path: string;
  method: 'POST';
  headers?: Record<string, string>;
  body?: unknown;
}) => Promise<unknown>;

export type Json = Record<string, unknown>;

/** The bridge's own invokeRemote: what every call uses unless a test injects one. */
export const bridgeInvoke = invokeRemote as InvokeRemote;

export const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

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
 * POSTs body to the remote's path and returns the JSON object of a 2xx answer.
 * Anything else (a bridge failure, a non-2xx answer, a 2xx answer without a
 * JSON object) is thrown as a RemoteError carrying the remote's code.
 */
export async function callRemote(path: string, body: Json, invoke: InvokeRemote = bridgeInvoke): Promise<Json> {
  let answer: unknown;
  try {
    answer = await invoke({ path, method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
  } catch (err) {
    // The bridge itself failed (timeout, unparsable answer, no remote …).
    const msg = err instanceof Error ? err.message : String(err);
    const inner = remoteError(msg);
    if (inner) throw new RemoteError(inner.code, inner.message);
    throw new RemoteError('remote_call_failed', msg.trim() || 'the call to the remote failed');
  }

  if (!isObject(answer)) {
    throw new RemoteError('invalid_response', 'the bridge returned no response');
  }
  const status = answer.status;
  const parsed = parseBody(answer.body);

  if (typeof status !== 'number') {
    throw new RemoteError('invalid_response', 'the bridge returned a response without an HTTP status');
  }
  if (status < 200 || status > 299) {
    const e = remoteError(parsed);
    if (e) throw new RemoteError(e.code, e.message, status);
    throw new RemoteError(`http_${status}`, `the remote answered HTTP ${status} without an error body`, status);
  }
  if (!isObject(parsed)) {
    throw new RemoteError('invalid_response', `the remote answered HTTP ${status} without a JSON body`, status);
  }
  return parsed;
}
