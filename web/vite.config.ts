import { defineConfig } from 'vite';

// Fixed file names (no content hashes): the node embeds exactly index.html, app.js and
// app.css, and CI checks that rebuilding gives the committed bytes.
export default defineConfig({
  build: {
    outDir: 'dist',
    assetsDir: '',
    emptyOutDir: true,
    modulePreload: { polyfill: false },
    cssCodeSplit: false,
    sourcemap: false,
    target: 'es2022',
    rollupOptions: {
      output: { entryFileNames: 'app.js', chunkFileNames: 'app-[name].js', assetFileNames: 'app[extname]' },
    },
  },
  test: { include: ['test/**/*.test.ts'] },
});
