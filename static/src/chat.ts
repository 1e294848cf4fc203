// Which Weavy chat to open. The remote decides it from the verified Forge
// Invocation Token and provisions the app with its API key (closed app, the
// user added as a member), so the browser neither builds nor sends a uid: a
// browser-built uid let any Weavy user create or join any page's chat.
//
// The remote answers POST /resolvers/chat with
//   {"app_id": <Weavy's numeric app id>, "uid": "…", "name": "…"}
// The page mounts <wy-chat uid="<app_id>">: the UIKit (≥ 28) turns an all-digit
// uid into a number and then only GETs /api/apps/{id}; any other uid, or a
// name, would make it upsert the app with the user's token.
//
// The request body is what the Custom UI's context says about the page:
//   {"contentId": "…", "contentType": "page"|"blogpost", "spaceKey": "…"}
// (fields the context lacks are left out; {} when there is no context). The
// remote checks it equals the signed FIT's context (400 if not) and only uses
// it when the FIT names no content; it is never trusted on its own.
//
// Before opening a page's chat the remote asks Confluence, as the user, whether
// the user can view the page. While Confluence rate-limits it, the remote
// answers 503 confluence_busy with Retry-After: the chat call is then repeated
// after that many seconds (bounded, see BUSY), a note shown meanwhile.
import { view } from '@forge/bridge';
import { RemoteError } from './errors';
import { fetchWeavyToken } from './token';
import { bridgeInvoke, callRemote, isObject, type InvokeRemote } from './remote';

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

/** What the page tells the remote about itself; see the file comment. */
export interface ChatRequest {
  contentId?: string;
  contentType?: 'page' | 'blogpost';
  spaceKey?: string;
}

const idOf = (v: unknown): string | undefined =>
  typeof v === 'string' && v !== '' ? v : typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? String(v) : undefined;

/**
 * The chat call's body from view.getContext(): extension.content.id and .type
 * (a page or blog post only, and both or neither) and extension.space.key.
 * Anything missing or of another shape is left out, so no context gives {}.
 */
export function chatRequestOf(ctx: unknown): ChatRequest {
  const req: ChatRequest = {};
  const ext = isObject(ctx) && isObject(ctx.extension) ? ctx.extension : undefined;
  if (!ext) return req;
  if (isObject(ext.content)) {
    const id = idOf(ext.content.id);
    const type = ext.content.type;
    if (id !== undefined && (type === 'page' || type === 'blogpost')) {
      req.contentId = id;
      req.contentType = type;
    }
  }
  if (isObject(ext.space) && typeof ext.space.key === 'string' && ext.space.key !== '') {
    req.spaceKey = ext.space.key;
  }
  return req;
}

/** Asks the remote which chat this user may open here; see the file comment. */
export async function fetchChat(invoke: InvokeRemote = bridgeInvoke, request: ChatRequest = {}): Promise<ChatInfo> {
  const body = await callRemote(CHAT_PATH, { ...request }, invoke);
  return { appId: appIdOf(body.app_id), uid: optionalString(body.uid), name: optionalString(body.name) };
}

/**
 * How long and how often the chat call is repeated while the remote answers
 * 503 confluence_busy: Retry-After seconds (default 5 when it sends none),
 * between 1 and 60, at most 10 calls in all; then the busy error is thrown.
 */
export const BUSY = { maxTries: 10, defaultSeconds: 5, minSeconds: 1, maxSeconds: 60 } as const;

/** Seconds to wait before the next chat call after a confluence_busy answer. */
export function busyDelay(retryAfter: number | undefined): number {
  if (retryAfter === undefined || !Number.isFinite(retryAfter)) return BUSY.defaultSeconds;
  return Math.min(BUSY.maxSeconds, Math.max(BUSY.minSeconds, Math.ceil(retryAfter)));
}

/** Called before each wait: the seconds until the next call and the calls made so far. */
export type OnBusy = (seconds: number, tries: number) => void;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** fetchChat, repeated while Confluence is busy (see BUSY). */
export async function fetchChatPatiently(invoke: InvokeRemote, request: ChatRequest, onBusy?: OnBusy): Promise<ChatInfo> {
  for (let tries = 1; ; tries++) {
    try {
      return await fetchChat(invoke, request);
    } catch (err) {
      if (!(err instanceof RemoteError) || err.code !== 'confluence_busy' || tries >= BUSY.maxTries) throw err;
      const seconds = busyDelay(err.retryAfter);
      onBusy?.(seconds, tries);
      await sleep(seconds * 1000);
    }
  }
}

export interface OpenOptions {
  /** The Custom UI's context (view.getContext() unless given); a failure counts as none. */
  context?: Promise<unknown>;
  /** Told when the chat call waits for a busy Confluence. */
  onBusy?: OnBusy;
}

async function contextOrNone(context: Promise<unknown> | undefined): Promise<unknown> {
  try {
    return await (context ?? view.getContext());
  } catch {
    return undefined;
  }
}

/**
 * Fetches the first token and the chat in parallel (one round trip of the
 * bridge instead of two; the chat call only waits for the context, which the
 * host has at hand). If either fails the chat's error wins, whatever arrives
 * first: it says whether this user may chat here at all (anonymous,
 * no_access, …), which matters more than a token problem.
 */
export async function openChat(invoke: InvokeRemote = bridgeInvoke, options: OpenOptions = {}): Promise<{ token: string; chat: ChatInfo }> {
  const chatting = contextOrNone(options.context).then((ctx) => fetchChatPatiently(invoke, chatRequestOf(ctx), options.onBusy));
  const [chat, token] = await Promise.allSettled([chatting, fetchWeavyToken(false, invoke)]);
  if (chat.status === 'rejected') throw chat.reason;
  if (token.status === 'rejected') throw token.reason;
  return { token: token.value, chat: chat.value };
}
