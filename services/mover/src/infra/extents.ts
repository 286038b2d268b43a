import { zeroCopy } from "#native/index.js";

/** A run of a file that holds data: [start, end). */
export interface Extent {
  start: number;
  end: number;
}

/**
 * The data extents of bytes [from, size) of an open file, in order, walked with
 * SEEK_DATA/SEEK_HOLE (one pair of calls per extent). Without the native module the whole range
 * is one extent: callers then read everything, which is correct, only slower for holes.
 */
export function* dataExtents(fd: number, size: number, from = 0): Generator<Extent> {
  if (!zeroCopy.available) {
    if (size > from) yield { start: from, end: size };
    return;
  }
  for (let at = from; at < size; ) {
    const start = zeroCopy.seekData(fd, at);
    if (start < 0 || start >= size) return;
    const hole = zeroCopy.seekHole(fd, start);
    const end = hole < 0 ? size : Math.min(hole, size);
    if (end <= start) return;
    yield { start, end };
    at = end;
  }
}

/**
 * Whether [start, end) of an open file holds any data, by one SEEK_DATA; undefined without the
 * native module (the caller then reads, or assumes data).
 */
export function hasDataIn(fd: number, start: number, end: number): boolean | undefined {
  if (!zeroCopy.available) return undefined;
  const next = zeroCopy.seekData(fd, start);
  return next >= 0 && next < end;
}
