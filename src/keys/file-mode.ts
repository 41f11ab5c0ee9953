// The permission check every key file gets (wrapping keys, SSE-C keys): what others may do with it.

/** A secret key file (raw AES, private PEM, SSE-C key) must not be readable or writable by group or others; a
 *  public key may be read by anyone, but one that others can write could be swapped for their own key. */
export function warnAboutKeyFileMode(path: string, mode: number, secret: boolean, warn: (message: string) => void): void {
  if (secret && (mode & 0o044) !== 0) warn(`key file ${path} is readable by group or others; run: chmod 600 ${path}`)
  else if (secret && (mode & 0o022) !== 0) warn(`key file ${path} is writable by group or others; run: chmod 600 ${path}`)
  else if ((mode & 0o022) !== 0) warn(`public key file ${path} is writable by group or others, so anyone could swap in their own key; run: chmod go-w ${path}`)
}
