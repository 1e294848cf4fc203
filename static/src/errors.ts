// Kept apart from remote.ts so the entry chunk (main.ts → status.ts) never
// pulls in @forge/bridge, which throws on load outside a Forge iframe.

/** An error with the remote's error code; message is "<code> — <message>". */
export class RemoteError extends Error {
  readonly code: string;
  readonly status?: number;
  readonly detail: string;
  /**
   * Seconds the remote asked us to wait before trying again (its Retry-After
   * header), when it sent one; e.g. with 503 confluence_busy.
   */
  readonly retryAfter?: number;

  constructor(code: string, detail: string, status?: number, retryAfter?: number) {
    super(`${code} — ${detail}`);
    this.name = 'RemoteError';
    this.code = code;
    this.detail = detail;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}
