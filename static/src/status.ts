// Readable messages in the page instead of a blank frame. Text only
// (textContent): a message from the remote is never parsed as HTML.
import { RemoteError } from './errors';

export const UNAVAILABLE = 'Chat is unavailable: ';

/**
 * Plain words for what a user (or the admin they ask) can meet in normal use,
 * so they are not left reading an error code. Everything else is a fault an
 * admin or we must look at, and is shown as the remote's code and message.
 */
export const PLAIN: Readonly<Record<string, string>> = {
  anonymous: UNAVAILABLE + 'you are not logged in. Log in to Confluence to use this chat.',
  license_inactive: UNAVAILABLE + "this app's licence is not active on this Confluence site. Ask a site admin to renew it.",
  no_access: "You can't view this page, so you can't join its chat.",
  user_token_missing:
    "This app is misconfigured: it may not ask Confluence, as you, whether you can view this page (its manifest lacks appUserToken on the remote's endpoint). Ask a site admin to tell the app's developer.",
  confluence_busy: 'Confluence is busy right now. Try again in a moment.',
  confluence_unavailable: UNAVAILABLE + 'Confluence did not answer when asked whether you can view this page. Try again in a moment.',
  uninstalled: UNAVAILABLE + 'this app has just been uninstalled from this Confluence site.',
};

/** Transient-looking answers that trying again cannot fix. */
const NOT_TRANSIENT: ReadonlySet<string> = new Set(['weavy_not_configured']);

/**
 * Whether trying again later may help: the bridge failed, or the remote
 * answered 429 or 5xx (Confluence or Weavy busy, failing or slow). Refusals
 * (403: no_access, anonymous, user_token_missing, …) and bad answers are final.
 */
export function canRetry(err: unknown): boolean {
  if (!(err instanceof RemoteError) || NOT_TRANSIENT.has(err.code)) return false;
  if (err.code === 'remote_call_failed') return true;
  return err.status !== undefined && (err.status === 429 || err.status >= 500);
}

/** One line for an error: "<code> — <message> (HTTP <status>)" or the message. */
export function describe(err: unknown): string {
  if (err instanceof RemoteError) {
    return err.status !== undefined ? `${err.message} (HTTP ${err.status})` : err.message;
  }
  if (err instanceof Error && err.message.trim() !== '') return err.message.trim();
  return String(err);
}

/**
 * What to show for an error: the plain words for a known code, with the
 * technical line kept as detail for support; otherwise "Chat is unavailable: "
 * and the technical line.
 */
export function explain(err: unknown): { text: string; detail?: string } {
  if (err instanceof RemoteError && Object.hasOwn(PLAIN, err.code)) {
    return { text: PLAIN[err.code], detail: describe(err) };
  }
  return { text: UNAVAILABLE + describe(err) };
}

export function alertBox(err: unknown, onRetry?: () => void): HTMLElement {
  const { text, detail } = explain(err);
  const box = document.createElement('div');
  box.className = 'alert';
  box.setAttribute('role', 'alert');
  const main = document.createElement('p');
  main.textContent = text;
  box.append(main);
  if (detail !== undefined) {
    const small = document.createElement('p');
    small.className = 'detail';
    small.textContent = detail;
    box.append(small);
  }
  if (onRetry && canRetry(err)) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'retry';
    button.textContent = 'Try again';
    button.addEventListener('click', () => onRetry(), { once: true });
    box.append(button);
  }
  return box;
}

/**
 * Replaces the page content with the error message, and a "Try again" button
 * that calls onRetry when the error is transient (see canRetry).
 */
export function showError(root: HTMLElement, err: unknown, onRetry?: () => void): void {
  root.replaceChildren(alertBox(err, onRetry));
  root.dataset.state = 'error';
  if (err instanceof RemoteError) root.dataset.errorCode = err.code;
  else delete root.dataset.errorCode;
}

/** The note shown while the chat call waits for a busy Confluence. */
export function busyNote(seconds: number): string {
  return `Confluence is busy right now; trying again in ${seconds} s…`;
}

export function showBusy(root: HTMLElement, seconds: number): void {
  const note = document.createElement('p');
  note.className = 'status';
  note.setAttribute('role', 'status');
  note.textContent = busyNote(seconds);
  root.replaceChildren(note);
  root.dataset.state = 'busy';
}

/** The page as it starts: "Loading chat…" (index.html has the same). */
export function showLoading(root: HTMLElement): void {
  const note = document.createElement('p');
  note.className = 'status';
  note.setAttribute('role', 'status');
  note.textContent = 'Loading chat…';
  root.replaceChildren(note);
  root.dataset.state = 'loading';
  delete root.dataset.errorCode;
}
