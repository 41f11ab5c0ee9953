import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest'
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import {
  CancelKeyDeletionCommand,
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  DisableKeyCommand,
  EnableKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GenerateDataKeyWithoutPlaintextCommand,
  KMS,
  KMSClient,
  ListAliasesCommand,
  ListKeysCommand,
  ReEncryptCommand,
  ScheduleKeyDeletionCommand,
} from '@aws-sdk/client-kms'
import { buildClient, CommitmentPolicy, KmsKeyringNode } from '@aws-crypto/client-node'
import { runLocalKms, startLocalKms, type LocalKms } from '../src/local-kms/server.js'

const credentials = { accessKeyId: 'x', secretAccessKey: 'y' }
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** One attempt only, so error tests see the first answer and call counts are exact. */
function clientFor(kms: LocalKms, extra: { maxAttempts?: number; region?: string } = {}): KMSClient {
  return new KMSClient({ endpoint: kms.endpoint, region: kms.region, credentials, maxAttempts: 1, ...extra })
}

async function expectKmsError(promise: Promise<unknown>, name: string, status = 400): Promise<void> {
  const error = (await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  )) as { name?: string; $metadata?: { httpStatusCode?: number } } | undefined
  expect(error, `expected ${name}`).toBeDefined()
  expect(error?.name).toBe(name)
  expect(error?.$metadata?.httpStatusCode).toBe(status)
}

/** A raw request, for what the SDK would never send. */
async function rawRequest(
  kms: LocalKms,
  target: string | undefined,
  body: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; contentType: string | null; json: { __type?: string; message?: string } }> {
  const response = await fetch(kms.endpoint + '/', {
    method: 'POST',
    headers: {
      'Content-Type': 'application/x-amz-json-1.1',
      Authorization: `AWS4-HMAC-SHA256 Credential=x/20250101/${kms.region}/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=${'0'.repeat(64)}`,
      ...(target ? { 'X-Amz-Target': target } : {}),
      ...headers,
    },
    body,
  })
  return { status: response.status, contentType: response.headers.get('content-type'), json: await response.json() }
}

const bytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text))

describe('local KMS over the real AWS SDK', () => {
  let kms: LocalKms
  let client: KMSClient
  const logLines: string[] = []

  beforeAll(async () => {
    kms = await startLocalKms({ log: (line) => logLines.push(line) })
    client = clientFor(kms)
  })
  afterAll(async () => {
    client.destroy()
    await kms.close()
  })

  async function newKeyArn(description = 'test key'): Promise<string> {
    const created = await client.send(new CreateKeyCommand({ Description: description }))
    return created.KeyMetadata?.Arn as string
  }

  test('CreateKey returns full metadata with a UUID key id and an ARN in the server region and account', async () => {
    const before = Date.now()
    const created = await client.send(new CreateKeyCommand({ Description: 'first', KeySpec: 'SYMMETRIC_DEFAULT' }))
    const metadata = created.KeyMetadata
    expect(metadata?.KeyId).toMatch(UUID)
    expect(metadata?.Arn).toBe(`arn:aws:kms:us-east-1:111122223333:key/${metadata?.KeyId}`)
    expect(metadata).toMatchObject({
      AWSAccountId: '111122223333',
      Description: 'first',
      Enabled: true,
      KeyState: 'Enabled',
      KeyUsage: 'ENCRYPT_DECRYPT',
      KeySpec: 'SYMMETRIC_DEFAULT',
      EncryptionAlgorithms: ['SYMMETRIC_DEFAULT'],
    })
    // CreationDate travels as epoch seconds; the SDK turns it into a Date.
    expect(metadata?.CreationDate).toBeInstanceOf(Date)
    expect(Math.abs((metadata?.CreationDate as Date).getTime() - before)).toBeLessThan(5000)
    await expectKmsError(client.send(new CreateKeyCommand({ KeySpec: 'RSA_2048' })), 'ValidationException')
  })

  test('DescribeKey and ListKeys find keys; ListKeys paginates', async () => {
    const arns = [await newKeyArn('a'), await newKeyArn('b'), await newKeyArn('c')]
    const described = await client.send(new DescribeKeyCommand({ KeyId: arns[1] }))
    expect(described.KeyMetadata?.Arn).toBe(arns[1])
    expect(described.KeyMetadata?.Description).toBe('b')

    const all = await client.send(new ListKeysCommand({}))
    expect(all.Truncated).toBe(false)
    for (const arn of arns) expect(all.Keys?.map((key) => key.KeyArn)).toContain(arn)

    const collected: string[] = []
    let marker: string | undefined
    do {
      const pageOfOne = await client.send(new ListKeysCommand({ Limit: 1, Marker: marker }))
      expect(pageOfOne.Keys).toHaveLength(1)
      collected.push(pageOfOne.Keys?.[0]?.KeyArn as string)
      marker = pageOfOne.Truncated ? pageOfOne.NextMarker : undefined
    } while (marker)
    expect(collected).toEqual(all.Keys?.map((key) => key.KeyArn))
  })

  test('aliases: key id, key ARN, alias name and alias ARN all resolve to the same key', async () => {
    const arn = await newKeyArn()
    const keyId = arn.split('/')[1] as string
    await client.send(new CreateAliasCommand({ AliasName: 'alias/resolve-me', TargetKeyId: keyId }))
    for (const reference of [keyId, arn, 'alias/resolve-me', 'arn:aws:kms:us-east-1:111122223333:alias/resolve-me']) {
      const described = await client.send(new DescribeKeyCommand({ KeyId: reference }))
      expect(described.KeyMetadata?.Arn, reference).toBe(arn)
      // Responses always carry the full key ARN, which KmsKeyringNode relies on.
      const encrypted = await client.send(new EncryptCommand({ KeyId: reference, Plaintext: bytes('x') }))
      expect(encrypted.KeyId, reference).toBe(arn)
    }

    const listed = await client.send(new ListAliasesCommand({ KeyId: 'alias/resolve-me' }))
    expect(listed.Aliases).toHaveLength(1)
    expect(listed.Aliases?.[0]).toMatchObject({
      AliasName: 'alias/resolve-me',
      AliasArn: 'arn:aws:kms:us-east-1:111122223333:alias/resolve-me',
      TargetKeyId: keyId,
    })
    const everything = await client.send(new ListAliasesCommand({}))
    expect(everything.Aliases?.map((alias) => alias.AliasName)).toContain('alias/resolve-me')

    await expectKmsError(
      client.send(new CreateAliasCommand({ AliasName: 'alias/resolve-me', TargetKeyId: arn })),
      'AlreadyExistsException',
    )
    await expectKmsError(client.send(new CreateAliasCommand({ AliasName: 'no-prefix', TargetKeyId: arn })), 'ValidationException')
    await expectKmsError(client.send(new CreateAliasCommand({ AliasName: 'alias/aws/kms', TargetKeyId: arn })), 'ValidationException')
    await expectKmsError(
      client.send(new CreateAliasCommand({ AliasName: 'alias/orphan', TargetKeyId: 'alias/does-not-exist' })),
      'NotFoundException',
    )
  })

  test('unknown keys answer NotFoundException, whatever form the reference takes', async () => {
    const arn = await newKeyArn()
    const otherRegionArn = arn.replace('us-east-1', 'eu-west-1')
    const otherAccountArn = arn.replace('111122223333', '444455556666')
    for (const reference of [
      '00000000-0000-4000-8000-000000000000',
      'arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000000',
      'alias/nope',
      'arn:aws:kms:us-east-1:111122223333:alias/nope',
      otherRegionArn,
      otherAccountArn,
    ]) {
      await expectKmsError(client.send(new DescribeKeyCommand({ KeyId: reference })), 'NotFoundException')
    }
    await expectKmsError(
      client.send(new GenerateDataKeyCommand({ KeyId: 'alias/nope', KeySpec: 'AES_256' })),
      'NotFoundException',
    )
  })

  test('GenerateDataKey honours KeySpec and NumberOfBytes and its blob decrypts to the same plaintext', async () => {
    const arn = await newKeyArn()
    const context = { purpose: 'test', file: 'a/b.txt' }
    for (const [request, length] of [
      [{ KeySpec: 'AES_256' as const }, 32],
      [{ KeySpec: 'AES_128' as const }, 16],
      [{ NumberOfBytes: 1 }, 1],
      [{ NumberOfBytes: 1024 }, 1024],
    ] as const) {
      const generated = await client.send(new GenerateDataKeyCommand({ KeyId: arn, EncryptionContext: context, ...request }))
      expect(generated.KeyId).toBe(arn)
      expect(generated.Plaintext).toHaveLength(length)
      const decrypted = await client.send(new DecryptCommand({ CiphertextBlob: generated.CiphertextBlob, EncryptionContext: context }))
      expect(Buffer.from(decrypted.Plaintext as Uint8Array).equals(Buffer.from(generated.Plaintext as Uint8Array))).toBe(true)
    }
    // Two data keys are never the same.
    const first = await client.send(new GenerateDataKeyCommand({ KeyId: arn, KeySpec: 'AES_256' }))
    const second = await client.send(new GenerateDataKeyCommand({ KeyId: arn, KeySpec: 'AES_256' }))
    expect(Buffer.from(first.Plaintext as Uint8Array).equals(Buffer.from(second.Plaintext as Uint8Array))).toBe(false)

    for (const invalid of [
      {},
      { KeySpec: 'AES_256' as const, NumberOfBytes: 32 },
      { NumberOfBytes: 0 },
      { NumberOfBytes: 1025 },
    ]) {
      await expectKmsError(client.send(new GenerateDataKeyCommand({ KeyId: arn, ...invalid })), 'ValidationException')
    }
    await expectKmsError(client.send(new GenerateDataKeyCommand({ KeyId: undefined, KeySpec: 'AES_256' })), 'ValidationException')
  })

  test('GenerateDataKeyWithoutPlaintext returns only the blob, which decrypts to a key of the asked size', async () => {
    const arn = await newKeyArn()
    const generated = await client.send(new GenerateDataKeyWithoutPlaintextCommand({ KeyId: arn, KeySpec: 'AES_128' }))
    expect(generated.KeyId).toBe(arn)
    expect(generated).not.toHaveProperty('Plaintext')
    const decrypted = await client.send(new DecryptCommand({ CiphertextBlob: generated.CiphertextBlob }))
    expect(decrypted.Plaintext).toHaveLength(16)
  })

  test('Encrypt/Decrypt round trip; context order does not matter; Decrypt works with and without KeyId', async () => {
    const arn = await newKeyArn()
    await client.send(new CreateAliasCommand({ AliasName: 'alias/roundtrip', TargetKeyId: arn }))
    const encrypted = await client.send(
      new EncryptCommand({ KeyId: arn, Plaintext: bytes('secret value'), EncryptionContext: { b: '2', a: '1' } }),
    )
    expect(encrypted.EncryptionAlgorithm).toBe('SYMMETRIC_DEFAULT')
    // Blob layout: version, key UUID, IV, ciphertext, tag.
    const blob = Buffer.from(encrypted.CiphertextBlob as Uint8Array)
    expect(blob.length).toBe(1 + 16 + 12 + 'secret value'.length + 16)
    expect(blob.subarray(1, 17).toString('hex')).toBe((arn.split('/')[1] as string).replace(/-/g, ''))

    for (const keyId of [undefined, arn, 'alias/roundtrip']) {
      const decrypted = await client.send(
        new DecryptCommand({ CiphertextBlob: blob, KeyId: keyId, EncryptionContext: { a: '1', b: '2' } }),
      )
      expect(Buffer.from(decrypted.Plaintext as Uint8Array).toString()).toBe('secret value')
      expect(decrypted.KeyId).toBe(arn)
      expect(decrypted.EncryptionAlgorithm).toBe('SYMMETRIC_DEFAULT')
    }
    await expectKmsError(client.send(new EncryptCommand({ KeyId: arn, Plaintext: new Uint8Array(4097) })), 'ValidationException')
    await expectKmsError(client.send(new EncryptCommand({ KeyId: arn, Plaintext: new Uint8Array(0) })), 'ValidationException')
  })

  test('Decrypt fails with the right exception for a wrong context, a wrong key and a tampered blob', async () => {
    const arn = await newKeyArn()
    const otherArn = await newKeyArn()
    const context = { tenant: 'a' }
    const encrypted = await client.send(new EncryptCommand({ KeyId: arn, Plaintext: bytes('payload'), EncryptionContext: context }))
    const blob = Buffer.from(encrypted.CiphertextBlob as Uint8Array)
    const decrypt = (ciphertext: Uint8Array, extra: { KeyId?: string; EncryptionContext?: Record<string, string> } = {}) =>
      client.send(new DecryptCommand({ CiphertextBlob: ciphertext, EncryptionContext: context, ...extra }))

    await expect(decrypt(blob)).resolves.toBeDefined()
    await expectKmsError(decrypt(blob, { EncryptionContext: { tenant: 'b' } }), 'InvalidCiphertextException')
    await expectKmsError(decrypt(blob, { EncryptionContext: {} }), 'InvalidCiphertextException')
    await expectKmsError(decrypt(blob, { EncryptionContext: { ...context, extra: 'x' } }), 'InvalidCiphertextException')
    await expectKmsError(decrypt(blob, { KeyId: otherArn }), 'IncorrectKeyException')

    // Flip one bit in each region of the blob: IV, ciphertext, tag, version byte.
    for (const offset of [20, 1 + 16 + 12 + 2, blob.length - 1, 0]) {
      const tampered = Buffer.from(blob)
      tampered[offset] = (tampered[offset] as number) ^ 0x01
      await expectKmsError(decrypt(tampered), 'InvalidCiphertextException')
    }
    // Re-label the blob with another existing key: the other key's material cannot authenticate it.
    const relabelled = Buffer.from(blob)
    Buffer.from((otherArn.split('/')[1] as string).replace(/-/g, ''), 'hex').copy(relabelled, 1)
    await expectKmsError(decrypt(relabelled), 'InvalidCiphertextException')
    await expectKmsError(decrypt(blob.subarray(0, 30)), 'InvalidCiphertextException')

    // A blob from another server's key names a key this one does not have.
    const otherServer = await startLocalKms()
    try {
      const otherClient = clientFor(otherServer)
      const foreignArn = await otherServer.createKey()
      const foreign = await otherClient.send(new EncryptCommand({ KeyId: foreignArn, Plaintext: bytes('p'), EncryptionContext: context }))
      await expectKmsError(decrypt(foreign.CiphertextBlob as Uint8Array), 'InvalidCiphertextException')
      otherClient.destroy()
    } finally {
      await otherServer.close()
    }
  })

  test('ReEncrypt moves a blob to another key and context without exposing the plaintext', async () => {
    const sourceArn = await newKeyArn()
    const destinationArn = await newKeyArn()
    const encrypted = await client.send(
      new EncryptCommand({ KeyId: sourceArn, Plaintext: bytes('move me'), EncryptionContext: { v: '1' } }),
    )
    const reEncrypted = await client.send(
      new ReEncryptCommand({
        CiphertextBlob: encrypted.CiphertextBlob,
        SourceEncryptionContext: { v: '1' },
        DestinationKeyId: destinationArn,
        DestinationEncryptionContext: { v: '2' },
      }),
    )
    expect(reEncrypted.SourceKeyId).toBe(sourceArn)
    expect(reEncrypted.KeyId).toBe(destinationArn)
    expect(reEncrypted).not.toHaveProperty('Plaintext')
    const decrypted = await client.send(
      new DecryptCommand({ CiphertextBlob: reEncrypted.CiphertextBlob, EncryptionContext: { v: '2' } }),
    )
    expect(decrypted.KeyId).toBe(destinationArn)
    expect(Buffer.from(decrypted.Plaintext as Uint8Array).toString()).toBe('move me')

    await expectKmsError(
      client.send(new ReEncryptCommand({ CiphertextBlob: encrypted.CiphertextBlob, SourceEncryptionContext: { v: 'x' }, DestinationKeyId: destinationArn })),
      'InvalidCiphertextException',
    )
    await expectKmsError(
      client.send(
        new ReEncryptCommand({
          CiphertextBlob: encrypted.CiphertextBlob,
          SourceKeyId: destinationArn,
          SourceEncryptionContext: { v: '1' },
          DestinationKeyId: destinationArn,
        }),
      ),
      'IncorrectKeyException',
    )
  })

  test('DisableKey makes every use fail with DisabledException until EnableKey; setKeyEnabled does the same', async () => {
    const arn = await newKeyArn()
    const encrypted = await client.send(new EncryptCommand({ KeyId: arn, Plaintext: bytes('p') }))
    await client.send(new DisableKeyCommand({ KeyId: arn }))
    const described = await client.send(new DescribeKeyCommand({ KeyId: arn }))
    expect(described.KeyMetadata).toMatchObject({ Enabled: false, KeyState: 'Disabled' })
    await expectKmsError(client.send(new EncryptCommand({ KeyId: arn, Plaintext: bytes('p') })), 'DisabledException')
    await expectKmsError(client.send(new GenerateDataKeyCommand({ KeyId: arn, KeySpec: 'AES_256' })), 'DisabledException')
    await expectKmsError(client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob })), 'DisabledException')

    await client.send(new EnableKeyCommand({ KeyId: arn }))
    await expect(client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob }))).resolves.toMatchObject({ KeyId: arn })

    kms.setKeyEnabled(arn, false)
    await expectKmsError(client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob })), 'DisabledException')
    kms.setKeyEnabled(arn, true)
    await expect(client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob }))).resolves.toBeDefined()
    expect(() => kms.setKeyEnabled('alias/none', true)).toThrow(/not found/)
  })

  test('ScheduleKeyDeletion puts the key in PendingDeletion, where use answers KMSInvalidStateException', async () => {
    const arn = await newKeyArn()
    const encrypted = await client.send(new EncryptCommand({ KeyId: arn, Plaintext: bytes('p') }))
    await expectKmsError(client.send(new ScheduleKeyDeletionCommand({ KeyId: arn, PendingWindowInDays: 6 })), 'ValidationException')
    const before = Date.now()
    const scheduled = await client.send(new ScheduleKeyDeletionCommand({ KeyId: arn, PendingWindowInDays: 7 }))
    expect(scheduled).toMatchObject({ KeyId: arn, KeyState: 'PendingDeletion', PendingWindowInDays: 7 })
    const expectedDeletion = before + 7 * 86_400_000
    expect(Math.abs((scheduled.DeletionDate as Date).getTime() - expectedDeletion)).toBeLessThan(5000)
    const described = await client.send(new DescribeKeyCommand({ KeyId: arn }))
    expect(described.KeyMetadata).toMatchObject({ KeyState: 'PendingDeletion', Enabled: false, PendingDeletionWindowInDays: 7 })

    await expectKmsError(client.send(new EncryptCommand({ KeyId: arn, Plaintext: bytes('p') })), 'KMSInvalidStateException')
    await expectKmsError(client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob })), 'KMSInvalidStateException')
    await expectKmsError(client.send(new EnableKeyCommand({ KeyId: arn })), 'KMSInvalidStateException')
    await expectKmsError(client.send(new ScheduleKeyDeletionCommand({ KeyId: arn })), 'KMSInvalidStateException')

    // Cancelling brings the key back disabled, as on AWS.
    await client.send(new CancelKeyDeletionCommand({ KeyId: arn }))
    await expectKmsError(client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob })), 'DisabledException')
  })

  test('requests the SDK would not send: unknown operation, bad JSON, wrong content type, missing or mis-scoped auth', async () => {
    const unknown = await rawRequest(kms, 'TrentService.MakeCoffee', '{}')
    expect(unknown.status).toBe(400)
    expect(unknown.contentType).toBe('application/x-amz-json-1.1')
    expect(unknown.json.__type).toBe('UnknownOperationException')
    expect((await rawRequest(kms, undefined, '{}')).json.__type).toBe('UnknownOperationException')

    const badJson = await rawRequest(kms, 'TrentService.ListKeys', '{not json')
    expect([badJson.status, badJson.json.__type]).toEqual([400, 'SerializationException'])
    const badType = await rawRequest(kms, 'TrentService.ListKeys', '{}', { 'Content-Type': 'application/json' })
    expect(badType.json.__type).toBe('SerializationException')
    const badBase64 = await rawRequest(kms, 'TrentService.Decrypt', JSON.stringify({ CiphertextBlob: '***' }))
    expect(badBase64.json.__type).toBe('SerializationException')
    const badContext = await rawRequest(
      kms,
      'TrentService.Encrypt',
      JSON.stringify({ KeyId: await newKeyArn(), Plaintext: 'AA==', EncryptionContext: { a: 1 } }),
    )
    expect(badContext.json.__type).toBe('ValidationException')

    const noAuth = await rawRequest(kms, 'TrentService.ListKeys', '{}', { Authorization: '' })
    expect(noAuth.json.__type).toBe('IncompleteSignatureException')
    const ok = await rawRequest(kms, 'TrentService.ListKeys', '{}')
    expect(ok.status).toBe(200)

    // A client configured for another region signs for that region; real KMS refuses it.
    const wrongRegion = clientFor(kms, { region: 'eu-west-1' })
    await expectKmsError(wrongRegion.send(new ListKeysCommand({})), 'InvalidSignatureException')
    wrongRegion.destroy()
  })

  test('counts() counts calls per operation, including failed ones, and resetCounts() clears them', async () => {
    const arn = await newKeyArn()
    kms.resetCounts()
    expect(kms.counts()).toEqual({})
    await client.send(new EncryptCommand({ KeyId: arn, Plaintext: bytes('p') }))
    await client.send(new EncryptCommand({ KeyId: arn, Plaintext: bytes('p') }))
    await client.send(new DescribeKeyCommand({ KeyId: arn }))
    await expectKmsError(client.send(new DescribeKeyCommand({ KeyId: 'alias/none' })), 'NotFoundException')
    expect(kms.counts()).toEqual({ Encrypt: 2, DescribeKey: 2 })
    kms.resetCounts()
    expect(kms.counts()).toEqual({})
  })

  test('logs never contain plaintext or data keys', async () => {
    const arn = await newKeyArn()
    logLines.length = 0
    const generated = await client.send(new GenerateDataKeyCommand({ KeyId: arn, KeySpec: 'AES_256' }))
    await client.send(new EncryptCommand({ KeyId: arn, Plaintext: bytes('very-secret-plaintext') }))
    expect(logLines.length).toBeGreaterThanOrEqual(2)
    const logged = logLines.join('\n')
    expect(logged).toContain('GenerateDataKey 200')
    expect(logged).not.toContain(Buffer.from(generated.Plaintext as Uint8Array).toString('base64'))
    expect(logged).not.toContain(Buffer.from(generated.Plaintext as Uint8Array).toString('hex'))
    expect(logged).not.toContain('very-secret-plaintext')
  })
})

describe('state file', () => {
  let directory: string
  beforeAll(async () => {
    directory = await mkdtemp(path.join(tmpdir(), 'local-kms-test-'))
  })
  afterAll(async () => {
    await rm(directory, { recursive: true, force: true })
  })

  test('keys, aliases and key states survive a restart, and old blobs still decrypt', async () => {
    const stateFile = path.join(directory, 'kms-state.json')
    const first = await startLocalKms({ stateFile, region: 'eu-central-1', accountId: '123456789012' })
    const firstClient = clientFor(first)
    const arn = await first.createKey('persisted')
    const disabledArn = await first.createKey('disabled one')
    await firstClient.send(new CreateAliasCommand({ AliasName: 'alias/persisted', TargetKeyId: arn }))
    await firstClient.send(new DisableKeyCommand({ KeyId: disabledArn }))
    const encrypted = await firstClient.send(
      new EncryptCommand({ KeyId: 'alias/persisted', Plaintext: bytes('kept'), EncryptionContext: { k: 'v' } }),
    )
    firstClient.destroy()
    await first.close()

    // Written atomically with owner-only permissions; no temporary files left behind.
    expect((await stat(stateFile)).mode & 0o777).toBe(0o600)
    expect(await readdir(directory)).toEqual(['kms-state.json'])

    // Region and account come from the file when not given.
    const second = await startLocalKms({ stateFile })
    expect(second.region).toBe('eu-central-1')
    const secondClient = clientFor(second)
    try {
      expect(arn).toMatch(/^arn:aws:kms:eu-central-1:123456789012:key\//)
      const described = await secondClient.send(new DescribeKeyCommand({ KeyId: 'alias/persisted' }))
      expect(described.KeyMetadata).toMatchObject({ Arn: arn, Description: 'persisted', KeyState: 'Enabled' })
      const decrypted = await secondClient.send(
        new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob, EncryptionContext: { k: 'v' } }),
      )
      expect(Buffer.from(decrypted.Plaintext as Uint8Array).toString()).toBe('kept')
      const disabled = await secondClient.send(new DescribeKeyCommand({ KeyId: disabledArn }))
      expect(disabled.KeyMetadata?.KeyState).toBe('Disabled')
      // setKeyEnabled persists too.
      second.setKeyEnabled(disabledArn, true)
    } finally {
      secondClient.destroy()
      await second.close()
    }
    const saved = JSON.parse(await readFile(stateFile, 'utf8')) as { keys: Array<{ KeyId: string; KeyState: string }> }
    expect(saved.keys.find((key) => disabledArn.endsWith(key.KeyId))?.KeyState).toBe('Enabled')

    await expect(startLocalKms({ stateFile, region: 'us-east-1' })).rejects.toThrow(/eu-central-1/)
  })

  test('a corrupt state file is refused rather than overwritten', async () => {
    const stateFile = path.join(directory, 'corrupt.json')
    await writeFile(stateFile, '{"hello": 1}')
    await expect(startLocalKms({ stateFile })).rejects.toThrow(/not a local-kms state file/)
    expect(await readFile(stateFile, 'utf8')).toBe('{"hello": 1}')
  })

  test('a state file that cannot be written answers 500 KMSInternalException', async () => {
    const stateDirectory = path.join(directory, 'vanishing')
    const kms = await startLocalKms({ stateFile: path.join(stateDirectory, 'state.json') })
    const client = clientFor(kms)
    try {
      await expectKmsError(client.send(new CreateKeyCommand({})), 'KMSInternalException', 500)
    } finally {
      client.destroy()
      await kms.close()
    }
  })
})

describe('fault injection', () => {
  let kms: LocalKms | undefined
  afterEach(async () => {
    await kms?.close()
    kms = undefined
  })

  test('latencyMs delays every request without serialising concurrent ones', async () => {
    // A latency far above the time six requests take to be sent: a serialising server would hold one at a time.
    kms = await startLocalKms({ latencyMs: 1_000 })
    const client = clientFor(kms)
    const arn = await kms.createKey()
    await client.send(new DescribeKeyCommand({ KeyId: arn }))
    kms.resetCounts()
    await Promise.all(Array.from({ length: 6 }, () => client.send(new DescribeKeyCommand({ KeyId: arn }))))
    expect(kms.counts()).toEqual({ DescribeKey: 6 })
    expect(kms.peakConcurrentRequests()).toBe(6)
    // One request at a time is one at a time.
    kms.resetCounts()
    for (let i = 0; i < 3; i++) await client.send(new DescribeKeyCommand({ KeyId: arn }))
    expect(kms.peakConcurrentRequests()).toBe(1)
    client.destroy()
  })

  test('throttleRate 1 answers HTTP 400 ThrottlingException, counted apart from the operation', async () => {
    kms = await startLocalKms({ throttleRate: 1 })
    const client = clientFor(kms)
    await expectKmsError(client.send(new ListKeysCommand({})), 'ThrottlingException')
    expect(kms.counts()).toEqual({ Throttled: 1 })
    client.destroy()
  })

  test('at throttleRate 0.3 a client with default retries still succeeds every call', async () => {
    // Each request is throttled independently, so with the default 3 attempts a call still fails
    // with probability 0.3^3 = 2.7%; the fixed default seed makes this sequence of decisions
    // reproducible (simulated: 12 sequential calls need 1-3 attempts each, none runs out).
    kms = await startLocalKms({ throttleRate: 0.3 })
    const arn = await kms.createKey()
    // Default retry settings: standard mode, 3 attempts, throttling back-off.
    const client = new KMSClient({ endpoint: kms.endpoint, region: kms.region, credentials })
    const calls = 12
    const attempts: number[] = []
    for (let call = 0; call < calls; call += 1) {
      const encrypted = await client.send(new EncryptCommand({ KeyId: arn, Plaintext: bytes(`n${call}`) }))
      expect(encrypted.KeyId).toBe(arn)
      attempts.push(encrypted.$metadata.attempts as number)
    }
    const counts = kms.counts()
    expect(counts.Encrypt).toBe(calls)
    expect(counts.Throttled).toBeGreaterThan(0)
    expect(Math.max(...attempts)).toBeGreaterThan(1)
    // Every throttled response cost the SDK exactly one extra attempt.
    expect(counts.Throttled).toBe(attempts.reduce((sum, count) => sum + count - 1, 0))
    client.destroy()
  })
})

describe('with the AWS Encryption SDK', () => {
  test('KmsKeyringNode encrypts and decrypts through the local KMS; a disabled key stops decryption', async () => {
    const kms = await startLocalKms()
    try {
      const keyArn = await kms.createKey('esdk')
      const clientProvider = (region: string) => new KMS({ endpoint: kms.endpoint, region, credentials, maxAttempts: 1 })
      const keyring = new KmsKeyringNode({ generatorKeyId: keyArn, clientProvider })
      const { encrypt, decrypt } = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
      const plaintext = Buffer.from('hello through the local KMS '.repeat(100))

      const { result, messageHeader } = await encrypt(keyring, plaintext, { encryptionContext: { purpose: 'e2e' } })
      expect(messageHeader.encryptedDataKeys).toHaveLength(1)
      expect(messageHeader.encryptedDataKeys[0]?.providerInfo).toBe(keyArn)
      expect(kms.counts().GenerateDataKey).toBe(1)

      const decrypted = await decrypt(keyring, result)
      expect(decrypted.plaintext.equals(plaintext)).toBe(true)
      expect(decrypted.messageHeader.encryptionContext.purpose).toBe('e2e')
      expect(kms.counts().Decrypt).toBe(1)

      kms.setKeyEnabled(keyArn, false)
      await expect(decrypt(keyring, result)).rejects.toThrow()
      // The failure came from KMS refusing the disabled key, not from the SDK short-circuiting.
      expect(kms.counts().Decrypt).toBe(2)
    } finally {
      await kms.close()
    }
  })
})

describe('runLocalKms', () => {
  test('prints one JSON line with endpoint and keyArn, serves, and stops on SIGTERM', async () => {
    const stdoutLines: string[] = []
    const stdoutSpy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      stdoutLines.push(chunk.toString())
      return true
    })
    const logLines: string[] = []
    const running = runLocalKms({ createKey: true, log: (line) => logLines.push(line) })
    try {
      await vi.waitFor(() => expect(stdoutLines).toHaveLength(1))
    } finally {
      stdoutSpy.mockRestore()
    }
    expect(stdoutLines[0]?.endsWith('\n')).toBe(true)
    const announced = JSON.parse(stdoutLines[0] as string) as { endpoint: string; keyArn: string }
    expect(Object.keys(announced).sort()).toEqual(['endpoint', 'keyArn'])
    expect(announced.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)

    const client = new KMSClient({ endpoint: announced.endpoint, region: 'us-east-1', credentials, maxAttempts: 1 })
    const described = await client.send(new DescribeKeyCommand({ KeyId: announced.keyArn }))
    expect(described.KeyMetadata?.Arn).toBe(announced.keyArn)

    process.emit('SIGTERM', 'SIGTERM')
    await running
    expect(process.listenerCount('SIGTERM')).toBe(0)
    await expect(client.send(new ListKeysCommand({}))).rejects.toThrow()
    client.destroy()
    expect(logLines.some((line) => line.includes('SIGTERM'))).toBe(true)
  })
})
