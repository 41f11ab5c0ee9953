#!/usr/bin/env node
// Regenerates fixtures/messages/: named good_*/fail_* Encryption SDK messages, the spec that
// test/fixtures.test.ts runs through the real CLI. Each case lists the flags to decrypt it with and what must
// happen. Run after `npm run build`: node scripts/make-fixtures.mjs
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync, rmSync, mkdirSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const out = join(root, 'fixtures', 'messages')
const cli = join(root, 'dist', 'cli.js')
const work = mkdtempSync(join(tmpdir(), 'envcrypt-fixtures-'))
mkdirSync(out, { recursive: true })
const keyA = join(out, 'key-a.bin') // the fixtures' test keys: not secret, never use them for data
const keyB = join(out, 'key-b.bin')
const specA = ['-w', 'provider=raw-aes', 'key=fixture-a', 'material=file://KEY_A']
const specB = ['-w', 'provider=raw-aes', 'key=fixture-b', 'material=file://KEY_B']
const withKeys = (args) => args.map((a) => a.replace('KEY_A', keyA).replace('KEY_B', keyB))
const sha256 = (b) => createHash('sha256').update(b).digest('hex')
// A deterministic plaintext generator, so the fixtures' plaintexts need not be stored.
const plaintext = (size) => {
  const buf = Buffer.alloc(size)
  for (let i = 0; i < size; i++) buf[i] = (i * 31 + (i >> 8)) & 0xff
  return buf
}

function encrypt(size, flags = [], keys = specA) {
  const input = join(work, `p${size}`)
  writeFileSync(input, plaintext(size))
  const target = join(work, `m${Math.random().toString(36).slice(2)}`)
  execFileSync(process.execPath, [cli, '-e', '-i', input, '-o', target, ...withKeys(keys), '-S', '-q', ...flags])
  return readFileSync(target)
}
const flip = (buf, offset, bit = 0) => {
  const copy = Buffer.from(buf)
  copy[offset < 0 ? copy.length + offset : offset] ^= 1 << bit
  return copy
}

const cases = {}
function add(name, message, { size, decrypt = specA, flags = [], expect = 'ok', note }) {
  writeFileSync(join(out, `${name}.msg`), message)
  cases[name] = { note, decrypt: [...decrypt, ...flags], expect, ...(expect === 'ok' ? { plaintext_size: size, plaintext_sha256: sha256(plaintext(size)) } : {}) }
}

const multi = encrypt(3 * 4096 + 100)
add('good_empty', encrypt(0), { size: 0, note: 'empty plaintext: one empty final frame' })
add('good_one_byte', encrypt(1), { size: 1, note: 'a single byte' })
add('good_frame_exact', encrypt(4096), { size: 4096, note: 'exactly one frame: a full frame then an empty final frame' })
add('good_several_frames', multi, { size: 3 * 4096 + 100, note: 'three full frames and a partial final frame' })
add('good_unsigned', encrypt(5000, ['--algorithm', 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY']), { size: 5000, flags: ['--decrypt-unsigned'], note: 'committing, unsigned suite, read with --decrypt-unsigned' })
add('good_v1_noncommitting', encrypt(5000, ['--commitment-policy', 'forbid-encrypt-allow-decrypt']), { size: 5000, flags: ['--commitment-policy', 'require-encrypt-allow-decrypt'], note: 'v1 message, allowed by require-encrypt-allow-decrypt' })
add('good_context', encrypt(100, ['-c', 'team=data', 'env=prod']), { size: 100, flags: ['-c', 'team=data', 'env'], note: 'context pairs and a bare key required on decrypt' })
add('good_two_keys_read_with_second', encrypt(100, [], [...specA, ...specB]), { size: 100, decrypt: specB, note: 'multi-keyring message read with its second key' })
add('good_large_frames', encrypt(200_000, ['--frame-length', '65536']), { size: 200_000, note: '64 KiB frames' })

add('fail_bitflip_header', flip(multi, 20), { expect: 'malformed|authenticat|commitment|data key|Malformed|Unsupported', note: 'one bit flipped in the header' })
add('fail_bitflip_frame', flip(multi, 2000), { expect: 'authenticat', note: 'one bit flipped in a frame body' })
add('fail_bitflip_signature', flip(multi, -10), { expect: 'signature|authenticat', note: 'one bit flipped in the ECDSA signature footer' })
add('fail_truncated_header', multi.subarray(0, 40), { expect: 'truncated|header', note: 'cut inside the header' })
add('fail_truncated_body', multi.subarray(0, multi.length - 500), { expect: 'truncated|incomplete|authenticat|end', note: 'cut inside the body' })
add('fail_trailing_bytes', Buffer.concat([encrypt(10, ['--algorithm', 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY']), Buffer.from('extra')]), { flags: ['--decrypt-unsigned'], expect: 'trailing|after the end|extra', note: 'unauthenticated bytes after a complete message' })
add('fail_not_a_message', Buffer.from('DATABASE_URL=postgres://app@db/prod\n'), { expect: 'not an AWS Encryption SDK message|malformed|Malformed|Unsupported', note: 'a plaintext file' })
add('fail_empty_file', Buffer.alloc(0), { expect: 'empty', note: 'zero bytes' })
add('fail_wrong_key', encrypt(100, [], specB), { expect: 'data key', note: 'wrapped under key B only, read with key A' })
add('fail_too_many_edks', encrypt(100, [], [...specA, ...specB]), { flags: ['--max-encrypted-data-keys', '1'], expect: 'encrypted data keys', note: 'two data keys, limit one' })
add('fail_v1_under_default_policy', encrypt(100, ['--commitment-policy', 'forbid-encrypt-allow-decrypt']), { expect: 'commitment', note: 'v1 message under require-encrypt-require-decrypt' })
add('fail_signed_with_decrypt_unsigned', encrypt(100), { flags: ['--decrypt-unsigned'], expect: 'sign', note: 'a signed message under --decrypt-unsigned' })
add('fail_context_mismatch', encrypt(100, ['-c', 'team=data']), { flags: ['-c', 'team=finance'], expect: 'encryption context mismatch', note: 'a context pair that differs' })
add('fail_frame_over_max_length', encrypt(200_000, ['--frame-length', '65536']), { flags: ['--max-length', '4096'], expect: 'frame|max', note: 'frames larger than --max-length' })

writeFileSync(join(out, 'cases.json'), JSON.stringify(cases, null, 2) + '\n')
rmSync(work, { recursive: true, force: true })
console.log(`wrote ${Object.keys(cases).length} cases to ${out}`)
