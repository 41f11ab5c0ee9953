// `--allow-pkcs1-decrypt`: Node 20 refuses PKCS#1 v1.5 RSA decryption (CVE-2023-46809, the Marvin attack)
// unless the process starts with `--security-revert=CVE-2023-46809`, which cannot be switched on later. So the
// flag re-runs envcrypt in a child Node started with it, meant for moving such messages to OAEP (reencrypt).
import { spawn } from 'node:child_process'

const SECURITY_REVERT = '--security-revert=CVE-2023-46809'

export function underSecurityRevert(): boolean {
  return process.execArgv.includes(SECURITY_REVERT)
}

/** The same command in a child Node with the revert; resolves to its exit code. */
export function rerunUnderSecurityRevert(): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SECURITY_REVERT, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit' })
    // Ctrl-C reaches the child from the terminal itself; the parent only waits for it. SIGTERM is sent to
    // one process, so it is passed on.
    const ignore = () => undefined
    const forward = () => child.kill('SIGTERM')
    process.on('SIGINT', ignore)
    process.on('SIGTERM', forward)
    child.on('error', reject)
    child.on('exit', (code, signal) => {
      process.off('SIGINT', ignore)
      process.off('SIGTERM', forward)
      resolve(code ?? (signal === 'SIGINT' ? 130 : 143))
    })
  })
}
