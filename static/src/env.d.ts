/// <reference types="vite/client" />

interface ImportMetaEnv {
  /** The Weavy environment URL, e.g. https://acme.weavy.io (set at build time). */
  readonly VITE_WEAVY_URL: string;
}

interface ImportMeta {
  readonly env: ImportMetaEnv;
}

// The UIKit's self-contained ESM bundle (no runtime chunk loading from
// node_modules paths or the Weavy environment) has the same API as the
// package root, whose types are published.
declare module '@weavy/uikit-web/dist/weavy.js' {
  export * from '@weavy/uikit-web';
}
