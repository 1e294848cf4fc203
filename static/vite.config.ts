import { defineConfig, loadEnv } from 'vite';

// VITE_WEAVY_URL: the Weavy environment the page talks to, baked in at build
// time (environment variable or a .env file). Forge serves the resource as
// static files, so there is no runtime configuration.
const DEFAULT_WEAVY_URL = 'https://example.weavy.io';

function weavyUrl(mode: string): string {
  const raw = (loadEnv(mode, process.cwd(), 'VITE_').VITE_WEAVY_URL ?? '').trim();
  if (raw === '') {
    if (mode === 'production' && !process.env.VITEST) {
      console.warn(`VITE_WEAVY_URL is not set: building with the placeholder ${DEFAULT_WEAVY_URL}`);
    }
    return DEFAULT_WEAVY_URL;
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`VITE_WEAVY_URL is not a URL: ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new Error(`VITE_WEAVY_URL must be an http(s) URL, got ${JSON.stringify(raw)}`);
  }
  if (url.pathname !== '/' || url.search || url.hash || url.username || url.password) {
    throw new Error(`VITE_WEAVY_URL must be an origin such as https://acme.weavy.io, got ${JSON.stringify(raw)}`);
  }
  return url.origin;
}

export default defineConfig(({ mode }) => {
  const weavy = weavyUrl(mode);
  return {
    // Relative asset URLs: Forge serves the resource from its own CDN path.
    base: './',
    define: {
      'import.meta.env.VITE_WEAVY_URL': JSON.stringify(weavy),
    },
    plugins: [
      {
        // Records the build's Weavy URL in dist/index.html (a <meta>, not a
        // script): operators can check it, the smoke test reads it.
        name: 'weavy-url-meta',
        transformIndexHtml: () => [{ tag: 'meta', attrs: { name: 'weavy-url', content: weavy }, injectTo: 'head' }],
      },
    ],
    build: {
      outDir: 'dist',
      emptyOutDir: true,
      target: 'es2022',
      // The Weavy UIKit bundle alone is ~3.1 MB minified (~0.95 MB gzip); it is one lazy chunk.
      chunkSizeWarningLimit: 4096,
    },
  };
});
