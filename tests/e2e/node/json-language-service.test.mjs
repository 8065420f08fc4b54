// VS Code's JSON engine (vscode-json-languageservice) on JSON configs that name the schema with
// a top-level "$schema", exactly as a user's file in examples/configs/ does.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import {
  ATTRIBUTE_FIELDS, CONFIG_SCHEMA_REF, ENTRY_FIELDS, EXAMPLES, METHODS, assertOffers, jsonEngine, labels,
} from './support.mjs';

const engine = jsonEngine();
const HEAD = `{"$schema": "${CONFIG_SCHEMA_REF}", `;
const inCfg = (body) => `${HEAD}"quant_cfg": [{"quantizer_name": "*weight_quantizer", "cfg": {${body}}}]}`;

test('top level offers quant_cfg and algorithm', async () => {
  const items = await engine.complete(`${HEAD}|}`);
  assertOffers(items, ['quant_cfg', 'algorithm', 'effective_bits']);
  const quantCfg = items.find((item) => item.label === 'quant_cfg');
  assert.match(String(quantCfg.documentation?.value ?? quantCfg.documentation), /last matching entry wins/);
});

test('no completion without a schema association (control)', async () => {
  const items = await engine.complete('{|}');
  assert.ok(!labels(items).includes('quant_cfg'));
});

test('an entry offers quantizer_name, parent_class, cfg and enable', async () => {
  const items = await engine.complete(`${HEAD}"quant_cfg": [{|}]}`);
  assertOffers(items, ENTRY_FIELDS);
});

test('a new quant_cfg element offers the entry snippets', async () => {
  const items = await engine.complete(`${HEAD}"quant_cfg": [|]}`);
  assertOffers(items, ['deny all', 'weight entry', 'input entry', 'KV-cache entry']);
  const kv = items.find((item) => item.label === 'KV-cache entry');
  assert.match(kv.insertText, /\*\[kv\]_bmm_quantizer/);
});

test('cfg offers every attribute field, each documented', async () => {
  const items = await engine.complete(inCfg('|'));
  assertOffers(items, ATTRIBUTE_FIELDS, { documented: true });
});

test('algorithm.method offers every method', async () => {
  const items = await engine.complete(`${HEAD}"algorithm": {"method": |}}`);
  assertOffers(items, METHODS.map((method) => `"${method}"`));
});

test('algorithm offers every method name and the algorithm snippets', async () => {
  const items = await engine.complete(`${HEAD}"algorithm": |}`);
  assertOffers(items, [...METHODS.map((method) => `"${method}"`), 'awq_lite algorithm']);
});

test('num_bits offers integer, [E, M] and ExMy values', async () => {
  const items = await engine.complete(inCfg('"num_bits": |'));
  assertOffers(items, ['8', '4', '[4,3]', '[2,1]', '"e4m3"']);
});

test('type, calibrator and quantizer_name offer their values', async () => {
  assert.deepEqual(labels(await engine.complete(inCfg('"type": |'))).sort(), ['"dynamic"', '"static"']);
  assert.deepEqual(labels(await engine.complete(inCfg('"calibrator": |'))).sort(), ['"histogram"', '"max"']);
  const names = await engine.complete(`${HEAD}"quant_cfg": [{"quantizer_name": |}]}`);
  assertOffers(names, ['"*weight_quantizer"', '"*[kv]_bmm_quantizer"']);
});

test('hover shows the field descriptions', async () => {
  assert.match(await engine.hover(inCfg('"num_b|its": 8')), /FP format/);
  assert.match(await engine.hover(`${HEAD}"quant_cfg": [{"quantizer_n|ame": "*"}]}`), /fnmatch/);
  assert.match(await engine.hover(`${HEAD}"algorithm": {"method": "awq_lite", "alpha_st|ep": 0.1}}`), /alpha/);
});

test('validation reports a typo and a bad value where they are', async () => {
  const text = `${HEAD}"quant_cfg": [{"quantizer_name": "*", "cfg": {\n  "num_bit": 8,\n  "type": "dynamc"}}]}`;
  const diagnostics = await engine.validate(text);
  const typo = diagnostics.find((d) => /num_bit/.test(d.message));
  assert.ok(typo, JSON.stringify(diagnostics));
  assert.deepEqual(typo.range.start, { line: 1, character: 2 });
  const value = diagnostics.find((d) => /dynamc|static/.test(d.message) && d !== typo);
  assert.ok(value, JSON.stringify(diagnostics));
  assert.equal(value.range.start.line, 2);
  assert.equal(diagnostics.length, 2, JSON.stringify(diagnostics));
});

test('validation reports cross-field rules and unknown methods', async () => {
  const cases = [
    `${HEAD}"algorithm": "awq"}`,
    `${HEAD}"quant_cfg": [{"quantizer_name": "*", "cfg": {"enable": true}}]}`,
    `${HEAD}"quant_cfg": [{"quantizer_name": "*", "cfg": {"axis": 0, "block_sizes": {"-1": 16}}}]}`,
    `${HEAD}"quant_cfg": [{"quantizer_name": "*", "cfg": {"num_bits": [5, 2]}}]}`,
    `${HEAD}"quant_cfg": [{"quantizer_name": "*"}]}`,
  ];
  for (const text of cases) assert.ok((await engine.validate(text)).length > 0, text);
});

test('legacy forms Model Optimizer accepts are not flagged', async () => {
  const text = `${HEAD}"quant_cfg": {"*weight_quantizer": {"num_bits": 8, "axis": 0}, "nn.Conv2d": {"*input_quantizer": {"enable": false}}, "default": {"enable": false}}}`;
  assert.deepEqual(await engine.validate(text), []);
});

test('every JSON example config validates cleanly', async () => {
  const files = readdirSync(EXAMPLES).filter((name) => name.endsWith('.json'));
  assert.ok(files.length > 0);
  for (const name of files) {
    const text = readFileSync(path.join(EXAMPLES, name), 'utf8');
    assert.match(text, /"\$schema"/, name);
    assert.deepEqual(await engine.validate(text, name), [], name);
  }
});
