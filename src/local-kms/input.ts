// Input validation for the KMS operations: every field is checked before use, with ValidationException
// (or SerializationException for a malformed blob) like the service.
import { KmsError, validation } from './kms-error.js'

export type JsonObject = Record<string, unknown>
export type EncryptionContext = Record<string, string>

export const SYMMETRIC_DEFAULT = 'SYMMETRIC_DEFAULT'

export function optionalString(input: JsonObject, name: string, min = 1, max = 2048): string | undefined {
  const value = input[name]
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'string') throw validation(`${name} must be a string.`)
  if (value.length < min || value.length > max) {
    throw validation(`${name} must have length between ${min} and ${max}.`)
  }
  return value
}

export function requiredString(input: JsonObject, name: string, min = 1, max = 2048): string {
  const value = optionalString(input, name, min, max)
  if (value === undefined) throw validation(`${name} is required.`)
  return value
}

export function optionalInteger(input: JsonObject, name: string, min: number, max: number): number | undefined {
  const value = input[name]
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw validation(`${name} must be an integer between ${min} and ${max}.`)
  }
  return value
}

export function requiredBlob(input: JsonObject, name: string, min: number, max: number): Buffer {
  const value = input[name]
  if (value === undefined || value === null) throw validation(`${name} is required.`)
  // Buffer.from(..., 'base64') silently skips junk, so check the alphabet first.
  if (typeof value !== 'string' || value.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) {
    throw new KmsError('SerializationException', `${name} must be base64.`)
  }
  const bytes = Buffer.from(value, 'base64')
  if (bytes.length < min || bytes.length > max) {
    throw validation(`${name} must be between ${min} and ${max} bytes.`)
  }
  return bytes
}

export function encryptionContextOf(input: JsonObject, name: string): EncryptionContext {
  const value = input[name]
  if (value === undefined || value === null) return {}
  if (typeof value !== 'object' || Array.isArray(value)) throw validation(`${name} must be a map of strings.`)
  const context: EncryptionContext = {}
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string') throw validation(`${name} values must be strings.`)
    context[key] = entry
  }
  return context
}

export function checkEncryptionAlgorithm(input: JsonObject, name: string): void {
  const algorithm = optionalString(input, name)
  if (algorithm !== undefined && algorithm !== SYMMETRIC_DEFAULT) {
    throw validation(`${name} ${algorithm} is not supported by a symmetric key.`)
  }
}

export function dataKeyLength(input: JsonObject): number {
  const keySpec = optionalString(input, 'KeySpec')
  const numberOfBytes = optionalInteger(input, 'NumberOfBytes', 1, 1024)
  if (keySpec !== undefined && numberOfBytes !== undefined) {
    throw validation('Specify either KeySpec or NumberOfBytes, not both.')
  }
  if (keySpec === 'AES_256') return 32
  if (keySpec === 'AES_128') return 16
  if (keySpec !== undefined) throw validation(`KeySpec ${keySpec} is not one of AES_256, AES_128.`)
  if (numberOfBytes === undefined) throw validation('Specify either KeySpec or NumberOfBytes.')
  return numberOfBytes
}
