// Kept apart from remote.ts so the entry chunk (main.ts → status.ts) never
// pulls in @forge/bridge, which throws on load outside a Forge iframe.

/** An error with the remote's error code; message is "<code> — <message>". */
export class RemoteError extends Error {
  readonly code: string;
  readonly status?: number;
  readonly detail: string;

  constructor(code: string, detail: string, status?: number) {
    super(`${code} — ${detail}`);
    this.name = 'RemoteError';
    this.code = code;
    this.detail = detail;
    this.status = status;
  }
}
