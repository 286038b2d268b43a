// Page arithmetic of the kernels, pure: no binding is loaded and nothing touches the system, so
// domain/ code may import it (`#native/page-tree.js`) where `#native/index.js`, which loads the
// native module, would bring file-system access with it.

/** Zero maps, fingerprints and chaining values are per page of this many bytes. */
export const PAGE_SIZE = 4096;

/** The number of pages (the last may be partial) of n bytes. */
export const pageCount = (n: number): number => Math.ceil(n / PAGE_SIZE);

/**
 * The number of 4 KiB pages of an input of n bytes whose BLAKE3 tree has a subtree per page
 * (n a power of two of at least two pages), else undefined: only such inputs have page
 * chaining values.
 */
export function pageTreePages(n: number): number | undefined {
  const pages = n / PAGE_SIZE;
  return Number.isInteger(pages) && pages >= 2 && (pages & (pages - 1)) === 0 && pages <= 2 ** 30 ? pages : undefined;
}
