// ajv in strict mode: the schemas are well-formed draft-07 for a validator far less lenient than
// Python's jsonschema, and ajv (ECMA-262 regexes, its own type rules) reaches the same verdicts
// as Python on fixtures/verdicts.json, which tests/qconfig/test_schema.py checks against the
// models.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import Ajv from 'ajv';

import { EXAMPLES, SCHEMA_FILES, loadSchema } from './support.mjs';

// Keywords only editors read; strict mode rejects unknown keywords unless they are declared.
const EDITOR_KEYWORDS = ['markdownDescription', 'markdownEnumDescriptions', 'defaultSnippets'];

function strictAjv({ editorKeywords = true } = {}) {
  const ajv = new Ajv({ strict: true, allowUnionTypes: true, allErrors: true });
  if (editorKeywords) for (const keyword of EDITOR_KEYWORDS) ajv.addKeyword(keyword);
  return ajv;
}

const validators = {};
const validator = (kind) => (validators[kind] ??= strictAjv().compile(loadSchema(kind)));

for (const kind of Object.keys(SCHEMA_FILES)) {
  test(`${kind} schema compiles in strict mode`, () => {
    const schema = loadSchema(kind);
    assert.equal(schema.$schema, 'http://json-schema.org/draft-07/schema#');
    assert.equal(typeof validator(kind), 'function');
  });
}

test('strict mode is really on: undeclared editor keywords are refused (control)', () => {
  assert.throws(() => strictAjv({ editorKeywords: false }).compile(loadSchema('config')), /strict mode: unknown keyword/);
});

test('ajv gives the verdicts Python and the models give', () => {
  const validate = validator('config');
  const cases = JSON.parse(readFileSync(new URL('./fixtures/verdicts.json', import.meta.url), 'utf8'));
  assert.ok(cases.length >= 30 && cases.some((c) => c.valid) && cases.some((c) => !c.valid));
  for (const { name, doc, valid } of cases) {
    assert.equal(validate(doc), valid, `${name}: ${JSON.stringify(validate.errors?.slice(0, 3))}`);
  }
});

test('the JSON example configs validate', () => {
  const validate = validator('config');
  const files = readdirSync(EXAMPLES).filter((name) => name.endsWith('.json'));
  assert.ok(files.length > 0);
  for (const name of files) {
    const doc = JSON.parse(readFileSync(path.join(EXAMPLES, name), 'utf8'));
    assert.ok(validate(doc), `${name}: ${JSON.stringify(validate.errors)}`);
  }
});
