// Readable messages in the page instead of a blank frame. Text only
// (textContent): a message from the remote is never parsed as HTML.
import { TokenError } from './errors';

export const UNAVAILABLE = 'Chat is unavailable: ';

/** One line for an error: "<code> — <message> (HTTP <status>)" or the message. */
export function describe(err: unknown): string {
  if (err instanceof TokenError) {
    return err.status !== undefined ? `${err.message} (HTTP ${err.status})` : err.message;
  }
  if (err instanceof Error && err.message.trim() !== '') return err.message.trim();
  return String(err);
}

export function alertBox(text: string): HTMLElement {
  const box = document.createElement('div');
  box.className = 'alert';
  box.setAttribute('role', 'alert');
  box.textContent = UNAVAILABLE + text;
  return box;
}

/** Replaces the page content with the error message. */
export function showError(root: HTMLElement, err: unknown): void {
  root.replaceChildren(alertBox(describe(err)));
  root.dataset.state = 'error';
}
