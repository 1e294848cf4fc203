// Readable messages in the page instead of a blank frame. Text only
// (textContent): a message from the remote is never parsed as HTML.
import { RemoteError } from './errors';

export const UNAVAILABLE = 'Chat is unavailable: ';

/**
 * Plain words for the refusals a user can meet in normal use, so they are
 * not left reading an error code. Everything else is a fault an admin or we
 * must look at, and is shown as the remote's code and message.
 */
export const REFUSALS: Readonly<Record<string, string>> = {
  anonymous: 'you are not logged in. Log in to Confluence to use this chat.',
  license_inactive: "this app's licence is not active on this Confluence site. Ask a site admin to renew it.",
  no_access: 'you do not have permission to view the page or space this chat belongs to.',
};

/** One line for an error: "<code> — <message> (HTTP <status>)" or the message. */
export function describe(err: unknown): string {
  if (err instanceof RemoteError) {
    return err.status !== undefined ? `${err.message} (HTTP ${err.status})` : err.message;
  }
  if (err instanceof Error && err.message.trim() !== '') return err.message.trim();
  return String(err);
}

/**
 * What to show for an error: the plain-words text for a known refusal, with
 * the technical line kept as detail for support; otherwise the technical line.
 */
export function explain(err: unknown): { text: string; detail?: string } {
  if (err instanceof RemoteError && Object.hasOwn(REFUSALS, err.code)) {
    return { text: REFUSALS[err.code], detail: describe(err) };
  }
  return { text: describe(err) };
}

export function alertBox(err: unknown): HTMLElement {
  const { text, detail } = explain(err);
  const box = document.createElement('div');
  box.className = 'alert';
  box.setAttribute('role', 'alert');
  const main = document.createElement('p');
  main.textContent = UNAVAILABLE + text;
  box.append(main);
  if (detail !== undefined) {
    const small = document.createElement('p');
    small.className = 'detail';
    small.textContent = detail;
    box.append(small);
  }
  return box;
}

/** Replaces the page content with the error message. */
export function showError(root: HTMLElement, err: unknown): void {
  root.replaceChildren(alertBox(err));
  root.dataset.state = 'error';
  if (err instanceof RemoteError) root.dataset.errorCode = err.code;
}
