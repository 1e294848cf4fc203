// Which Weavy chat to open. The remote decides it from the verified Forge
// Invocation Token alone and provisions the app with its API key (closed app,
// the user added as a member), so the browser neither builds nor sends a uid:
// a browser-built uid let any Weavy user create or join any page's chat.
//
// The remote answers POST /resolvers/chat (body {}) with
//   {"app_id": <Weavy's numeric app id>, "uid": "…", "name": "…"}
// The page mounts <wy-chat uid="<app_id>">: the UIKit (≥ 28) turns an all-digit
// uid into a number and then only GETs /api/apps/{id}; any other uid, or a
// name, would make it upsert the app with the user's token.
import { RemoteError } from './errors';
import { fetchWeavyToken } from './token';
import { bridgeInvoke, callRemote, type InvokeRemote } from './remote';

export const CHAT_PATH = '/resolvers/chat';

export interface ChatInfo {
  /** Weavy's app id in decimal, the value for <wy-chat uid=…>. */
  appId: string;
  /** The app's Weavy uid and display name, for information only. */
  uid?: string;
  name?: string;
}

/**
 * Returns a Weavy app id as the decimal string the UIKit reads back as a
 * number. Only a positive safe integer passes: a string (even of digits)
 * is refused because the contract is a JSON number, and anything the UIKit
 * would not read as the same number (fractions, > 2^53 - 1) would open
 * another app or upsert one.
 */
export function appIdOf(v: unknown): string {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
    const got = typeof v === 'number' ? String(v) : v === null ? 'null' : typeof v;
    throw new RemoteError('invalid_response', `the remote did not answer a numeric Weavy app id (app_id: ${got})`);
  }
  return String(v);
}

const optionalString = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** Asks the remote which chat this user may open here; see the file comment. */
export async function fetchChat(invoke: InvokeRemote = bridgeInvoke): Promise<ChatInfo> {
  const body = await callRemote(CHAT_PATH, {}, invoke);
  return { appId: appIdOf(body.app_id), uid: optionalString(body.uid), name: optionalString(body.name) };
}

/**
 * Fetches the first token and the chat in parallel (one round trip of the
 * bridge instead of two). If either fails the chat's error wins, whatever
 * arrives first: it says whether this user may chat here at all (anonymous,
 * no_access, …), which matters more than a token problem.
 */
export async function openChat(invoke: InvokeRemote = bridgeInvoke): Promise<{ token: string; chat: ChatInfo }> {
  const [chat, token] = await Promise.allSettled([fetchChat(invoke), fetchWeavyToken(false, invoke)]);
  if (chat.status === 'rejected') throw chat.reason;
  if (token.status === 'rejected') throw token.reason;
  return { token: token.value, chat: chat.value };
}
