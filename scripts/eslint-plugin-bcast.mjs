// The house rules on imports, as ESLint rules (used by eslint.config.js):
// - bcast/no-restricted-modules: a list of modules a file may not import in any form;
// - bcast/workspace-entries: a workspace package is imported only through an entry of its exports
//   map, never by a deep path (@bcast/core/src/x, @bcast/ws/dist/index.js) nor by a relative path
//   into another package's src/ or dist/;
// - bcast/no-focused-tests: no it.only / describe.only / test.only (also .only.each, .concurrent.only).
// Every form of module reference is checked: import (also `import type` and the bare `import 'x'`),
// export ... from, import(), require(), require.resolve(), import.meta.resolve(), vi.mock() and
// friends, TypeScript's `import('x').T` types and `import x = require('x')`.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

/** Calls whose first argument names a module. */
const MODULE_CALLS = new Set(['require', 'require.resolve', 'import.meta.resolve', 'vi.mock', 'vi.doMock', 'vi.unmock', 'vi.doUnmock', 'vi.importActual', 'vi.importMock']);

function calleeName(node) {
  if (node.type === 'Identifier') return node.name;
  if (node.type === 'MetaProperty') return `${node.meta.name}.${node.property.name}`;
  if (node.type === 'MemberExpression' && !node.computed && node.property.type === 'Identifier') {
    const object = calleeName(node.object);
    return object === undefined ? undefined : `${object}.${node.property.name}`;
  }
  return undefined;
}

function literalString(node) {
  if (!node) return undefined;
  if (node.type === 'Literal' && typeof node.value === 'string') return node;
  if (node.type === 'TemplateLiteral' && node.expressions.length === 0) return node;
  if (node.type === 'TSLiteralType') return literalString(node.literal);
  return undefined;
}

function stringValue(node) {
  return node.type === 'TemplateLiteral' ? node.quasis[0].value.cooked : node.value;
}

/** Calls `visit(specifier, node)` for every module a file references. */
function moduleVisitors(visit) {
  const check = (node) => {
    const lit = literalString(node);
    if (lit) visit(stringValue(lit), lit);
  };
  return {
    ImportDeclaration: (node) => check(node.source),
    ExportNamedDeclaration: (node) => check(node.source),
    ExportAllDeclaration: (node) => check(node.source),
    ImportExpression: (node) => check(node.source),
    CallExpression(node) {
      const name = calleeName(node.callee);
      if (name !== undefined && MODULE_CALLS.has(name)) check(node.arguments[0]);
    },
    TSImportType: (node) => check(node.source ?? node.argument),
    TSExternalModuleReference: (node) => check(node.expression),
  };
}

/** "ws" and "ws/lib/x" name the module "ws"; "@redis/client/x" names "@redis/client". */
function bareName(specifier) {
  if (specifier.startsWith('.') || specifier.startsWith('/') || specifier.startsWith('node:') || /^[a-z]+:/i.test(specifier)) return undefined;
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

const noRestrictedModules = {
  meta: {
    type: 'problem',
    docs: { description: 'Forbid modules in every import form: static, type-only, side-effect, dynamic, require, TS import types.' },
    schema: [
      {
        type: 'object',
        properties: {
          modules: { type: 'array', items: { type: 'string' } },
          message: { type: 'string' },
        },
        required: ['modules'],
        additionalProperties: false,
      },
    ],
    messages: { restricted: '"{{specifier}}" is not allowed here{{why}}' },
  },
  create(context) {
    const { modules, message } = context.options[0];
    const exact = new Set(modules.filter((m) => !m.endsWith('/*')));
    const scopes = modules.filter((m) => m.endsWith('/*')).map((m) => m.slice(0, -1));
    return moduleVisitors((specifier, node) => {
      const name = bareName(specifier);
      if (name === undefined) return;
      if (exact.has(name) || scopes.some((scope) => name.startsWith(scope))) {
        context.report({ node, messageId: 'restricted', data: { specifier, why: message ? `: ${message}` : '' } });
      }
    });
  },
};

/** The workspace's packages: name, directory and exports-map keys, read from pnpm-workspace.yaml. */
export function workspacePackages(root) {
  const yaml = readFileSync(join(root, 'pnpm-workspace.yaml'), 'utf8');
  const globs = [...yaml.matchAll(/^\s*-\s*['"]?([^'"\s#]+)['"]?\s*$/gm)].map((m) => m[1]);
  const dirs = [];
  for (const glob of globs) {
    if (glob.endsWith('/*')) {
      const parent = join(root, glob.slice(0, -2));
      for (const name of readdirSync(parent)) {
        const dir = join(parent, name);
        if (statSync(dir).isDirectory()) dirs.push(dir);
      }
    } else dirs.push(join(root, glob));
  }
  const packages = [];
  for (const dir of dirs) {
    let pkg;
    try {
      pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    } catch {
      continue;
    }
    const exp = pkg.exports;
    const entries = exp === undefined ? undefined : typeof exp === 'string' || Object.keys(exp).every((k) => !k.startsWith('.')) ? ['.'] : Object.keys(exp);
    packages.push({ name: pkg.name, dir, entries });
  }
  return packages;
}

function entryAllowed(entries, subpath) {
  if (entries === undefined) return true; // no exports map: node resolves any path; nothing to enforce
  return entries.some((key) => {
    if (!key.includes('*')) return key === subpath;
    const [head, tail] = key.split('*');
    return subpath.startsWith(head) && subpath.endsWith(tail) && subpath.length >= head.length + tail.length;
  });
}

function owner(packages, file) {
  let best;
  for (const pkg of packages) {
    if ((file === pkg.dir || file.startsWith(pkg.dir + sep)) && (!best || pkg.dir.length > best.dir.length)) best = pkg;
  }
  return best;
}

const workspaceEntries = {
  meta: {
    type: 'problem',
    docs: { description: "Import workspace packages through their public entries only; no relative path into another package's src/ or dist/." },
    schema: [
      {
        type: 'object',
        properties: { root: { type: 'string' } },
        required: ['root'],
        additionalProperties: false,
      },
    ],
    messages: {
      deep: '"{{specifier}}" is not a public entry of {{name}} (entries: {{entries}}); import the entry instead',
      relative: "\"{{specifier}}\" reaches into {{name}}'s {{folder}}/; import {{name}} through its public entries instead",
    },
  },
  create(context) {
    const { root } = context.options[0];
    const packages = workspacePackages(root);
    const byName = new Map(packages.map((p) => [p.name, p]));
    const filename = context.physicalFilename ?? context.filename;
    const self = owner(packages, resolve(filename));
    return moduleVisitors((specifier, node) => {
      if (specifier.startsWith('.')) {
        const target = resolve(dirname(filename), specifier);
        const pkg = owner(packages, target);
        if (!pkg || pkg === self) return;
        const folder = relative(pkg.dir, target).split(sep)[0];
        if (folder === 'src' || folder === 'dist') context.report({ node, messageId: 'relative', data: { specifier, name: pkg.name, folder } });
        return;
      }
      const name = bareName(specifier);
      const pkg = name === undefined ? undefined : byName.get(name);
      if (!pkg) return;
      const subpath = specifier === name ? '.' : `.${specifier.slice(name.length)}`;
      if (!entryAllowed(pkg.entries, subpath)) {
        const entries = pkg.entries.map((e) => (e === '.' ? name : `${name}${e.slice(1)}`)).join(', ');
        context.report({ node, messageId: 'deep', data: { specifier, name, entries } });
      }
    });
  },
};

const TEST_FUNCTIONS = new Set(['it', 'test', 'describe', 'suite', 'bench']);

function rootIdentifier(node) {
  while (node) {
    if (node.type === 'Identifier') return node.name;
    if (node.type === 'MemberExpression') node = node.object;
    else if (node.type === 'CallExpression') node = node.callee;
    else return undefined;
  }
  return undefined;
}

const noFocusedTests = {
  meta: {
    type: 'problem',
    docs: { description: 'No it.only / describe.only / test.only: a focused test silently skips the rest of the suite.' },
    schema: [],
    messages: { focused: '{{name}}.only focuses the run on this test and skips the others; remove .only' },
  },
  create(context) {
    return {
      MemberExpression(node) {
        if (node.computed || node.property.type !== 'Identifier' || node.property.name !== 'only') return;
        const name = rootIdentifier(node.object);
        if (name !== undefined && TEST_FUNCTIONS.has(name)) context.report({ node: node.property, messageId: 'focused', data: { name } });
      },
    };
  },
};

export default {
  meta: { name: 'eslint-plugin-bcast' },
  rules: {
    'no-restricted-modules': noRestrictedModules,
    'workspace-entries': workspaceEntries,
    'no-focused-tests': noFocusedTests,
  },
};
