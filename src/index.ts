// envcrypt as a library: the CLI is a thin layer over these.
export { encryptTree, decryptTree, registerEngine, DEFAULT_FRAME_LENGTH } from './tree.js'
export type { EncryptTreeOptions, DecryptTreeOptions, CommonTreeOptions, TreeSummary, FileEvent } from './tree.js'
export { parseWrappingKeySpec, buildKeyring } from './keys.js'
export type { WrappingKeySpec, KmsCallCounts } from './keys.js'
export type { CachingSettings } from './materials.js'
export { EnvcryptError, UsageError, IntegrityError, InterruptedError } from './errors.js'
export { keygen } from './keygen.js'
export { VERSION } from './version.js'
