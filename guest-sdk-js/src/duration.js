// Durations as Cloudflare's Workflows accept them: a number of
// milliseconds, or a string such as "10 seconds", "2 hours", "1 day".

const UNITS_MS = {
  millisecond: 1,
  ms: 1,
  second: 1000,
  sec: 1000,
  s: 1000,
  minute: 60_000,
  min: 60_000,
  m: 60_000,
  hour: 3_600_000,
  h: 3_600_000,
  day: 86_400_000,
  d: 86_400_000,
  week: 7 * 86_400_000,
  month: 30 * 86_400_000,
  year: 365 * 86_400_000,
};

const PART = /\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*/y;

/** Milliseconds of a duration; `what` names it in errors. */
export function toMs(value, what) {
  let ms;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RangeError(`${what}: a duration must be finite, got ${value}`);
    ms = value;
  } else if (typeof value === 'string') {
    const text = value.trim().toLowerCase();
    if (text === '') throw new RangeError(`${what}: empty duration`);
    if (/^\d+(\.\d+)?$/.test(text)) {
      ms = Number(text);
    } else {
      let total = 0;
      PART.lastIndex = 0;
      while (PART.lastIndex < text.length) {
        const start = PART.lastIndex;
        const m = PART.exec(text);
        if (m === null || PART.lastIndex === start) {
          throw new RangeError(`${what}: cannot parse duration ${JSON.stringify(value)}`);
        }
        let unit = m[2];
        if (!(unit in UNITS_MS) && unit.endsWith('s')) unit = unit.slice(0, -1);
        if (!(unit in UNITS_MS)) {
          throw new RangeError(`${what}: unknown unit ${JSON.stringify(m[2])} in duration ${JSON.stringify(value)}`);
        }
        total += Number(m[1]) * UNITS_MS[unit];
      }
      ms = total;
    }
  } else {
    throw new TypeError(`${what}: expected milliseconds or a duration string such as "10 seconds", got ${typeof value}`);
  }
  if (ms < 0) throw new RangeError(`${what}: a duration cannot be negative`);
  return Math.round(ms);
}
