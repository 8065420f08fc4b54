// Shared by the editor-engine tests: where the repository is, the real language services wired
// to read schemas/ from disk (as an editor does), and a cursor marker for documents.
//
// Documents are given URIs inside examples/configs/ so that the relative schema references a
// user writes there ("../../schemas/...") resolve to the checked-in files.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { getLanguageService as getJsonService } from 'vscode-json-languageservice';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { getLanguageService as getYamlService } from 'yaml-language-server';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const SCHEMA_DIR = path.join(ROOT, 'schemas');
export const EXAMPLES = path.join(ROOT, 'examples', 'configs');
export const SCHEMA_FILES = {
  config: 'qconfig-config.schema.json',
  manifest: 'qconfig-manifest.schema.json',
  plan: 'qconfig-plan.schema.json',
};
export const CONFIG_SCHEMA_REF = `../../schemas/${SCHEMA_FILES.config}`;
export const YAML_MODELINE = `# yaml-language-server: $schema=${CONFIG_SCHEMA_REF}`;

// The contract (docs/model-optimizer-rules.md, 'Quantizer attributes' and 'Calibration algorithm
// configs'), written out so that a schema that loses a field or a method fails here even if it
// is internally consistent.
export const ATTRIBUTE_FIELDS = [
  'enable', 'num_bits', 'effective_bits', 'axis', 'fake_quant', 'unsigned', 'narrow_range',
  'learn_amax', 'type', 'block_sizes', 'bias', 'trt_high_precision_dtype', 'calibrator', 'rotate',
  'pass_through_bwd', 'backend', 'backend_extra_args', 'use_constant_amax', 'constant_amax',
];
export const METHODS = [
  'max', 'mse', 'local_hessian', 'smoothquant', 'awq_lite', 'awq_clip', 'awq_full', 'svdquant',
  'gptq', 'nvfp4_act_headroom', 'lsq',
];
export const ENTRY_FIELDS = ['quantizer_name', 'parent_class', 'cfg', 'enable'];

export function loadSchema(kind) {
  return JSON.parse(readFileSync(path.join(SCHEMA_DIR, SCHEMA_FILES[kind]), 'utf8'));
}

/** Only file: URIs are served, from disk; an editor would fetch http(s) too. */
export async function requestSchema(uri) {
  if (!uri.startsWith('file:')) throw new Error(`unexpected schema request: ${uri}`);
  return readFile(fileURLToPath(uri), 'utf8');
}

const workspaceContext = {
  resolveRelativePath: (relativePath, resource) => new URL(relativePath, resource).href,
};

export function exampleUri(name) {
  return pathToFileURL(path.join(EXAMPLES, name)).href;
}

// yaml-language-server caches parsed documents by URI and version, as an editor's edits bump
// the version; every document made here gets a new one.
let version = 0;

export function document(text, name, languageId) {
  version += 1;
  return TextDocument.create(exampleUri(name), languageId, version, text);
}

/** `text` with one `|` marking the cursor → [TextDocument, Position]. */
export function withCursor(text, name, languageId) {
  const offset = text.indexOf('|');
  if (offset < 0 || text.indexOf('|', offset + 1) >= 0) throw new Error('need exactly one | cursor');
  const doc = document(text.slice(0, offset) + text.slice(offset + 1), name, languageId);
  return [doc, doc.positionAt(offset)];
}

export function hoverText(hover) {
  if (!hover) return '';
  const parts = Array.isArray(hover.contents) ? hover.contents : [hover.contents];
  return parts.map((p) => (typeof p === 'string' ? p : p.value)).join('\n');
}

/** VS Code's JSON engine; the schema comes from the document's own "$schema". */
export function jsonEngine() {
  const service = getJsonService({ schemaRequestService: requestSchema, workspaceContext });
  service.configure({ validate: true, allowComments: false, schemas: [] });
  const parse = (doc) => service.parseJSONDocument(doc);
  return {
    async complete(text) {
      const [doc, position] = withCursor(text, 'completion.json', 'json');
      return (await service.doComplete(doc, position, parse(doc))).items;
    },
    async hover(text) {
      const [doc, position] = withCursor(text, 'hover.json', 'json');
      return hoverText(await service.doHover(doc, position, parse(doc)));
    },
    async validate(text, name = 'validation.json') {
      const doc = document(text, name, 'json');
      return service.doValidation(doc, parse(doc));
    },
  };
}

/** yaml-language-server's language service; the schema comes from the modeline only. */
export function yamlEngine() {
  const service = getYamlService({ schemaRequestService: requestSchema, workspaceContext });
  service.configure({ validate: true, completion: true, hover: true, schemas: [] });
  return {
    async complete(text) {
      const [doc, position] = withCursor(text, 'completion.yaml', 'yaml');
      return (await service.doComplete(doc, position, false)).items;
    },
    async hover(text) {
      const [doc, position] = withCursor(text, 'hover.yaml', 'yaml');
      return hoverText(await service.doHover(doc, position));
    },
    async validate(text, name = 'validation.yaml') {
      return service.doValidation(document(text, name, 'yaml'), false);
    },
  };
}

export const labels = (items) => items.map((item) => item.label);

/** Every label in `expected` is among the completion `items`, documented if asked. */
export function assertOffers(items, expected, { documented = false } = {}) {
  for (const label of expected) {
    const item = items.find((candidate) => candidate.label === label);
    assert.ok(item, `${label} not offered; got ${labels(items).join(', ')}`);
    if (documented) assert.ok(item.documentation, `${label} has no documentation`);
  }
}
