// Entry point. Kept tiny: @forge/bridge throws while it is being loaded when
// the page is not inside a Forge iframe, so it is only imported (with the
// UIKit) after checking for the host's bridge.
import './style.css';
import { showError, showLoading } from './status';

const root = document.getElementById('app') as HTMLElement;

async function start(): Promise<void> {
  const host = (globalThis as { __bridge?: { callBridge?: unknown } }).__bridge;
  if (typeof host?.callBridge !== 'function') {
    throw new Error('this page only works inside Confluence (the Forge bridge is missing)');
  }
  const { mountChat } = await import('./app');
  await mountChat(root);
}

// An error is shown in the page; a transient one (Confluence or Weavy busy or
// failing, the bridge timing out) with a "Try again" button that starts over.
function run(): void {
  start().catch((err: unknown) => {
    console.warn('forge-remote chat:', err);
    showError(root, err, () => {
      showLoading(root);
      run();
    });
  });
}

run();
