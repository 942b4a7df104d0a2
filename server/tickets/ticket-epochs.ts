/** Which epochs' keys a TLS server holds at a given time, and the time windows of each. */

export interface EpochPolicy {
  /** Length of an epoch, seconds. */
  epochSeconds: number;
  /** Epochs after its own during which a key still decrypts tickets. */
  decryptEpochs: number;
}

export interface EpochWindow {
  epoch: number;
  notBefore: number;
  encryptUntil: number;
  decryptUntil: number;
}

export function epochAt(policy: EpochPolicy, unixSeconds: number): number {
  return Math.floor(unixSeconds / policy.epochSeconds);
}

export function epochWindow(policy: EpochPolicy, epoch: number): EpochWindow {
  const start = epoch * policy.epochSeconds;
  return {
    epoch,
    notBefore: start,
    encryptUntil: start + policy.epochSeconds,
    decryptUntil: start + (1 + policy.decryptEpochs) * policy.epochSeconds,
  };
}

/**
 * The windows a server needs at `unixSeconds`, newest first: the next epoch (announced one epoch
 * ahead, so a server whose clock runs ahead still encrypts with a key its peers know), the
 * current one, and the past ones whose tickets still decrypt.
 */
export function windowsAt(policy: EpochPolicy, unixSeconds: number): EpochWindow[] {
  const current = epochAt(policy, unixSeconds);
  const windows: EpochWindow[] = [];
  for (let epoch = current + 1; epoch >= current - policy.decryptEpochs; epoch--) windows.push(epochWindow(policy, epoch));
  return windows;
}
