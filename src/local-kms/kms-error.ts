// The one error the local KMS answers with: its wire name (`__type`), message and HTTP status.

/** A KMS error as it goes on the wire: `__type` name, message and HTTP status. */
export class KmsError extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message)
  }
}

export function validation(message: string): KmsError {
  return new KmsError('ValidationException', message)
}
