/** Something whose fsync makes a directory's entries durable (a held directory). */
export interface SyncableDir {
  sync(): Promise<void>;
}

interface Pending {
  done: Promise<void>;
  start: () => void;
}

interface DirState {
  running: Promise<void>;
  next: Pending | undefined;
}

/**
 * Group commit for directory fsyncs. A finalize renames its file and must not answer before the
 * directory is fsynced; a thousand finalizes into one directory need not make a thousand fsyncs.
 * A caller whose rename is done joins the next fsync to start: the one running may have begun
 * before its rename, so it waits for that one to end, and then a single fsync serves everyone who
 * joined meanwhile. Each caller resolves only after an fsync that began after its call.
 */
export class DirSyncs {
  private readonly dirs = new Map<string, DirState>();

  /** Resolves once an fsync of `path` that began after this call has completed (through `dir`, or a joiner's). */
  sync(path: string, dir: SyncableDir): Promise<void> {
    const state = this.dirs.get(path);
    if (state === undefined) {
      const fresh: DirState = { running: Promise.resolve(), next: undefined };
      fresh.running = this.run(path, fresh, dir.sync());
      this.dirs.set(path, fresh);
      return fresh.running;
    }
    if (state.next === undefined) {
      let start = (): void => undefined;
      const gate = new Promise<void>((resolve) => (start = resolve));
      // The first joiner's handle makes the fsync; it stays open until this settles (its caller awaits it).
      state.next = { done: gate.then(() => dir.sync()), start };
    }
    return state.next.done;
  }

  private run(path: string, state: DirState, sync: Promise<void>): Promise<void> {
    return sync.finally(() => {
      const next = state.next;
      if (next === undefined) {
        this.dirs.delete(path);
        return;
      }
      state.next = undefined;
      state.running = this.run(path, state, next.done);
      // Callers of the finished fsync learn its outcome; one failing here is theirs, not the next's.
      state.running.catch(() => undefined);
      next.start();
    });
  }
}
