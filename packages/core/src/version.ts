/** Kept equal to package.json's version by scripts/sync-versions.mjs (checked by a test). */
export const VERSION = '0.1.0';
