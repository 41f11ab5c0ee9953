// `--dry-run`: the plan, file by file, without reading a key or writing anything. The planner already made
// every up-front refusal (collisions, output inside input), so a clean dry run means the real run can start.
import type { Mode } from '../message/metadata.js'
import { printable } from '../errors.js'
import type { PlannedFile } from './plan.js'

export interface PlannedAction {
  input: string
  output: string
  action: 'encrypt' | 'decrypt' | 'skip'
  /** Why a file is skipped, or what would go wrong with it. */
  note?: string
}

/** The flags that decide what a dry run says about an existing output. */
export interface DryRunFlags {
  skipExisting?: boolean
  noOverwrite?: boolean
  confirmOverwrite?: unknown
}

export async function dryRunActions(mode: Mode, planned: readonly PlannedFile[], options: DryRunFlags): Promise<PlannedAction[]> {
  const verb = mode === 'encrypt' ? 'encrypt' : 'decrypt'
  const actions: PlannedAction[] = []
  for (const file of planned) {
    const action: PlannedAction = { input: file.input.display, output: file.output.display, action: verb }
    if (file.input.skip || file.input.failure) {
      actions.push({ ...action, action: 'skip', note: file.input.skip ? `${file.input.skip}, not a regular file` : file.input.failure })
      continue
    }
    if ((options.skipExisting || options.noOverwrite || options.confirmOverwrite) && (await file.output.exists())) {
      if (options.skipExisting) Object.assign(action, { action: 'skip', note: 'output exists' })
      else if (options.noOverwrite) Object.assign(action, { action: 'skip', note: 'output exists, --no-overwrite' })
      else action.note = 'would ask before overwriting'
    }
    actions.push(action)
  }
  return actions
}

/** The lines `--dry-run` prints: `encrypt IN -> OUT`, skipped files marked. */
export function describePlan(actions: readonly PlannedAction[]): string[] {
  // Names are escaped as on stderr: a newline or ESC in a file name must not split or forge a line.
  return actions.map((a) => `${a.action} ${printable(a.input)} -> ${printable(a.output)}${a.note ? `  (${printable(a.note)})` : ''}`)
}
