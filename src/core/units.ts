/*
 * units - parse and print the duration and size values used in configuration.
 *
 * Durations are written "500ms", "30s", "5m", "4h", "5d" (a bare integer is not
 * accepted: an operator who writes 30 must say 30 of what). Sizes are written
 * "512", "64KB", "50MB", "1GB", 1024-based as the contract says; a bare number
 * is octets. Both return null for anything else, so the caller can name the key.
 */

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS: Record<string, number> = { '': 1, B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 };

/** parseDuration - "5m" -> 300000 (milliseconds), or null when malformed. */
export function parseDuration(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(text);
  if (!m) return null;
  const value = Number(m[1]) * DURATION_UNITS[m[2]!]!;
  return Number.isFinite(value) ? Math.round(value) : null;
}

/** parseSize - "50MB" -> 52428800 (octets), or null when malformed. */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|)\s*$/i.exec(text);
  if (!m) return null;
  const value = Number(m[1]) * SIZE_UNITS[m[2]!.toUpperCase()]!;
  return Number.isFinite(value) ? Math.floor(value) : null;
}

/** formatDuration - 300000 -> "5m"; the largest unit that divides exactly. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** formatAge - a short human age for tables: "42s", "3m", "5h", "2d". */
export function formatAge(ms: number): string {
  if (ms < 60_000) return `${Math.max(0, Math.floor(ms / 1000))}s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m`;
  if (ms < 86_400_000) return `${Math.floor(ms / 3_600_000)}h`;
  return `${Math.floor(ms / 86_400_000)}d`;
}
