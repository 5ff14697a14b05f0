// The little semver the scripts need without a dependency: sorting release versions, and whether a
// version satisfies a range such as an `engines.node` field (`>=18`, `^14.18.0 || >=16`, `>= 0.10.0`,
// `10.x`, `1.2 - 3`). Prerelease tags are ignored. Not a general semver implementation.

/** [major, minor, patch] of a release version such as `8.21.0` or `v20.19.1`; undefined otherwise. */
export function parseVersion(version) {
  const match = /^v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$/.exec(String(version).trim());
  return match ? [Number(match[1]), Number(match[2]), Number(match[3])] : undefined;
}

const cmp = (a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];

/** Sorts release versions (strings) in ascending semver order; unparsable ones first. */
export function compareVersions(a, b) {
  const pa = parseVersion(a);
  const pb = parseVersion(b);
  if (!pa || !pb) return (pa ? 1 : 0) - (pb ? 1 : 0);
  return cmp(pa, pb);
}

/** A partial version (`1`, `1.2`, `1.2.3`, `1.x`, `*`): its numbers, up to the first wildcard. */
function partial(text) {
  if (text === '' || text === '*' || /^[xX]$/.test(text)) return [];
  const match = /^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:[-+][0-9A-Za-z.-]*)?$/.exec(text);
  if (!match) return undefined;
  const numbers = [];
  for (const part of match.slice(1, 4)) {
    if (part === undefined || !/^\d+$/.test(part)) break;
    numbers.push(Number(part));
  }
  return numbers;
}

const lower = (n) => [n[0] ?? 0, n[1] ?? 0, n[2] ?? 0];
/** The first version above a partial one: `1` → 2.0.0, `1.2` → 1.3.0. */
const bump = (n) => (n.length === 1 ? [n[0] + 1, 0, 0] : [n[0], n[1] + 1, 0]);

/** One comparator (`>=1.2`, `^3`, `~1.2.3`, `5.x`) as [op, version] pairs that must all hold; undefined if unparsable. */
function desugar(token) {
  const match = /^(<=|>=|<|>|=|\^|~>?)?(.*)$/.exec(token);
  const op = match?.[1] ?? '';
  const n = partial(match?.[2] ?? '');
  if (n === undefined) return undefined;
  const full = n.length === 3;
  if (n.length === 0) return op === '<' || op === '>' ? [['<', [0, 0, 0]]] : [];
  switch (op) {
    case '':
    case '=':
      return full ? [['>=', n], ['<=', n]] : [['>=', lower(n)], ['<', bump(n)]];
    case '>=':
      return [['>=', lower(n)]];
    case '>':
      return full ? [['>', n]] : [['>=', bump(n)]];
    case '<':
      return [['<', lower(n)]];
    case '<=':
      return full ? [['<=', n]] : [['<', bump(n)]];
    case '~':
    case '~>':
      return [['>=', lower(n)], ['<', n.length === 1 ? bump(n) : [n[0], n[1] + 1, 0]]];
    case '^': {
      const [major, minor = 0, patch = 0] = n;
      if (major > 0 || n.length === 1) return [['>=', lower(n)], ['<', [major + 1, 0, 0]]];
      if (n.length === 2 || minor > 0) return [['>=', lower(n)], ['<', [0, minor + 1, 0]]];
      return [['>=', lower(n)], ['<', [0, 0, patch + 1]]];
    }
    default:
      return undefined;
  }
}

function test(v, [op, bound]) {
  const c = cmp(v, bound);
  return op === '>=' ? c >= 0 : op === '>' ? c > 0 : op === '<' ? c < 0 : c <= 0;
}

/**
 * Whether `version` satisfies `range` (true / false), or undefined when the range has a form this
 * does not understand. An empty range or `*` matches every version.
 */
export function satisfies(version, range) {
  const v = parseVersion(version);
  if (!v) return undefined;
  let understood = true;
  for (const alternative of String(range).split('||')) {
    // `>= 1.2` → `>=1.2`; `1.2 - 3` is a hyphen range.
    const text = alternative.trim().replace(/(<=|>=|<|>|=|\^|~>?)\s+/g, '$1');
    const hyphen = /^(\S+)\s+-\s+(\S+)$/.exec(text);
    let comparators;
    if (hyphen) {
      const from = partial(hyphen[1]);
      const to = partial(hyphen[2]);
      if (from === undefined || to === undefined) comparators = undefined;
      else comparators = [['>=', lower(from)], ...(to.length === 0 ? [] : to.length === 3 ? [['<=', to]] : [['<', bump(to)]])];
    } else {
      comparators = [];
      for (const token of text.split(/\s+/).filter(Boolean)) {
        const parts = desugar(token);
        if (parts === undefined) {
          comparators = undefined;
          break;
        }
        comparators.push(...parts);
      }
    }
    if (comparators === undefined) understood = false;
    else if (comparators.every((c) => test(v, c))) return true;
  }
  return understood ? false : undefined;
}
