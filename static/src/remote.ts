// One call to a resolver of the remote (forge-remote) through the Forge
// bridge, shared by the token and chat calls so that both read answers and
// errors the same way. Kept apart from the DOM and the Weavy bundle so it can
// be unit-tested with a mocked bridge.
//
// The remote answers POST /resolvers/<name> with
//   2xx  a JSON object
//   else {"error":{"code":"snake_case","message":"…"}}
// @forge/bridge's invokeRemote does NOT reject on a non-2xx answer: it resolves
// with {status, headers, body}. So the status is checked here, and a
// Retry-After header (503 confluence_busy) is carried on the RemoteError.
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

/** The value of one header, whatever shape the bridge gave the headers in. */
function headerOf(headers: unknown, name: string): string | undefined {
  if (typeof headers !== 'object' || headers === null) return undefined;
  // A Headers-like object (a fetch Headers, or anything with get()).
  const get = (headers as { get?: unknown }).get;
  if (typeof get === 'function') {
    const v: unknown = get.call(headers, name);
    return typeof v === 'string' ? v : undefined;
  }
  // A plain object. @forge/bridge joins array values with ','; an injected
  // invoke may still hand over an array, or keys in any case.
  const want = name.toLowerCase();
  for (const [key, v] of Object.entries(headers)) {
    if (key.toLowerCase() !== want) continue;
    if (typeof v === 'string') return v;
    if (typeof v === 'number' && Number.isFinite(v)) return String(v);
    if (Array.isArray(v) && typeof v[0] === 'string') return v[0];
    return undefined;
  }
  return undefined;
}

/**
 * Reads a Retry-After header as seconds to wait: delta-seconds ("5") or an
 * HTTP date (seconds from now, at least 0). Undefined when absent or unreadable.
 * Callers bound the value themselves.
 */
export function retryAfterOf(headers: unknown, now: number = Date.now()): number | undefined {
  const raw = headerOf(headers, 'retry-after')?.trim();
  if (!raw) return undefined;
  // "5", or "5, 5" when the bridge joined a repeated header.
  const secs = /^([0-9]+)\s*(,|$)/.exec(raw);
  if (secs) return Number(secs[1]);
  // An HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT"); V8's Date.parse reads far
  // more than that, so only a date in that form is taken.
  const at = /GMT$/i.test(raw) ? Date.parse(raw) : NaN;
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - now) / 1000));
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
    const retryAfter = retryAfterOf(answer.headers);
    const e = remoteError(parsed);
    if (e) throw new RemoteError(e.code, e.message, status, retryAfter);
    throw new RemoteError(`http_${status}`, `the remote answered HTTP ${status} without an error body`, status, retryAfter);
  }
  if (!isObject(parsed)) {
    throw new RemoteError('invalid_response', `the remote answered HTTP ${status} without a JSON body`, status);
  }
  return parsed;
}
