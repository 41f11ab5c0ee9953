// An input must be the file that was planned, from the first read to the last: a file that shrinks, grows or
// is replaced while it is read would otherwise give a valid message of a cut-off or mixed plaintext.
//
// Contract for every reader of a local input (pool worker, stream sources, any native batch path):
//   1. open the file, then checkInputUnchanged(fd, path, planned) before the first read;
//   2. read until end of file, counting the bytes;
//   3. checkInputUnchanged(fd, path, planned, bytesRead) after the last read and before the output is committed.
// Either call throws InputChangedError; the caller removes its temporary output. Cost: one fstat per call,
// plus one stat of the path at the end (it sees a file renamed over the input while it was read).
import { fstatSync, statSync } from 'node:fs'
import { stat as statPath } from 'node:fs/promises'
import { EnvcryptError } from '../errors.js'

/** What the planner saw: size, mtime and inode (undefined fields are not checked). Plain data (posted to workers). */
export interface PlannedInput {
  size?: number
  mtimeMs?: number
  ino?: number
}

export class InputChangedError extends EnvcryptError {
  override name = 'InputChangedError'
}

interface Seen {
  size: number
  mtimeMs: number
  ino: number
}

/** Why `seen` is not the planned file, or undefined when it is. Exported for readers with their own stat. */
function inputChange(planned: PlannedInput, seen: Seen, bytesRead?: number): string | undefined {
  if (planned.ino !== undefined && seen.ino !== planned.ino) return 'replaced by another file'
  if (planned.size !== undefined && seen.size !== planned.size) return `size ${planned.size} became ${seen.size} bytes`
  if (bytesRead !== undefined && planned.size !== undefined && bytesRead !== planned.size) return `${bytesRead} of ${planned.size} bytes read`
  if (planned.mtimeMs !== undefined && seen.mtimeMs !== planned.mtimeMs) return 'modified'
  return undefined
}

function throwIfChanged(reason: string | undefined): void {
  if (reason) throw new InputChangedError(`the input changed while being read (${reason}); nothing was written for it, run again`)
}

/** Throws InputChangedError unless the open descriptor `fd` is still the planned file. With `bytesRead`
 *  (after the last read), also checks that exactly the planned size was read and that `path` still names it. */
export function checkInputUnchanged(fd: number, path: string, planned: PlannedInput, bytesRead?: number): void {
  const seen = fstatSync(fd)
  throwIfChanged(inputChange(planned, seen, bytesRead))
  if (bytesRead !== undefined && planned.ino !== undefined) {
    const now = statSync(path, { throwIfNoEntry: false })
    throwIfChanged(!now ? 'removed' : now.ino !== seen.ino ? 'replaced by another file' : undefined)
  }
}

/** The async form for readers on the main thread (FileHandle.stat): same checks as checkInputUnchanged. */
export async function checkHandleUnchanged(stat: () => Promise<Seen>, path: string, planned: PlannedInput, bytesRead?: number): Promise<void> {
  const seen = await stat()
  throwIfChanged(inputChange(planned, seen, bytesRead))
  if (bytesRead !== undefined && planned.ino !== undefined) {
    const now = await statPath(path).catch(() => undefined)
    throwIfChanged(!now ? 'removed' : now.ino !== seen.ino ? 'replaced by another file' : undefined)
  }
}
