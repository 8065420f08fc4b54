// yaml-language-server (the engine of the Red Hat YAML extension) on YAML configs associated with
// the schema only by the first-line modeline `# yaml-language-server: $schema=<relative path>`.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import {
  ATTRIBUTE_FIELDS, ENTRY_FIELDS, EXAMPLES, METHODS, ROOT, YAML_MODELINE, assertOffers, labels, yamlEngine,
} from './support.mjs';

const engine = yamlEngine();
const yaml = (...lines) => [YAML_MODELINE, ...lines].join('\n');
const inCfg = (...lines) =>
  yaml('quant_cfg:', '  - quantizer_name: "*weight_quantizer"', '    cfg:', ...lines.map((l) => `      ${l}`));

test('top level offers quant_cfg and algorithm', async () => {
  const items = await engine.complete(yaml('|'));
  assertOffers(items, ['quant_cfg', 'algorithm', 'effective_bits']);
});

test('no completion without the modeline (control)', async () => {
  const items = labels(await engine.complete('|'));
  assert.ok(!items.includes('quant_cfg'), items.join(', '));
});

test('an entry offers quantizer_name, parent_class, cfg and enable', async () => {
  const items = await engine.complete(yaml('quant_cfg:', '  - quantizer_name: "*"', '    |'));
  assertOffers(items, ENTRY_FIELDS.filter((key) => key !== 'quantizer_name'));
  const first = await engine.complete(yaml('quant_cfg:', '  - |'));
  assertOffers(first, ENTRY_FIELDS);
});

test('a new quant_cfg element offers the entry snippets', async () => {
  const items = await engine.complete(yaml('quant_cfg:', '  - |'));
  assertOffers(items, ['deny all', 'weight entry', 'input entry', 'KV-cache entry']);
});

test('cfg offers every attribute field, each documented', async () => {
  const items = await engine.complete(inCfg('|'));
  assertOffers(items, ATTRIBUTE_FIELDS, { documented: true });
});

test('an algorithm mapping offers method and the algorithm snippets first', async () => {
  const items = labels(await engine.complete(yaml('algorithm:', '  |')));
  assert.ok(items.includes('method') && items.includes('awq_lite algorithm'), items.join(', '));
  assert.ok(!items.includes('alpha_step'), 'settings of a method not chosen yet');
  const lite = labels(await engine.complete(yaml('algorithm:', '  method: awq_lite', '  |')));
  assert.ok(lite.includes('alpha_step') && !lite.includes('perc_damp'), lite.join(', '));
});

test('algorithm.method offers every method', async () => {
  const items = await engine.complete(yaml('algorithm:', '  method: |'));
  assertOffers(items, METHODS);
});

test('algorithm offers every method name', async () => {
  const items = await engine.complete(yaml('algorithm: |'));
  assertOffers(items, METHODS);
});

test('num_bits offers integer, [E, M] and ExMy values', async () => {
  const items = await engine.complete(inCfg('num_bits: |'));
  assertOffers(items, ['8', '4', '[4,3]', '[2,1]', 'e4m3', 'e2m1']);
});

test('type and quantizer_name offer their values', async () => {
  assertOffers(await engine.complete(inCfg('type: |')), ['static', 'dynamic']);
  // labels are written as they would be inserted: quoted, since YAML reads a bare * as an alias
  assertOffers(await engine.complete(yaml('quant_cfg:', '  - quantizer_name: |')), ['"*[kv]_bmm_quantizer"']);
});

test('hover shows the field descriptions', async () => {
  assert.match(await engine.hover(inCfg('num_b|its: 8')), /FP format/);
  assert.match(await engine.hover(yaml('quant_cfg:', '  - quantizer_n|ame: "*"', '    enable: false')), /fnmatch/);
  assert.match(await engine.hover(yaml('algorithm:', '  method: awq_lite', '  alpha_st|ep: 0.1')), /alpha/);
});

test('validation reports a typo and a bad value where they are', async () => {
  const diagnostics = await engine.validate(inCfg('num_bit: 8', 'type: dynamc'));
  const typo = diagnostics.find((d) => /num_bit/.test(d.message));
  assert.ok(typo, JSON.stringify(diagnostics));
  assert.deepEqual(typo.range.start, { line: 4, character: 6 });
  const value = diagnostics.find((d) => d !== typo);
  assert.ok(value && value.range.start.line === 5, JSON.stringify(diagnostics));
  assert.match(value.message, /static/);
  assert.equal(diagnostics.length, 2, JSON.stringify(diagnostics));
});

test('validation reports cross-field rules and unknown methods', async () => {
  const cases = [
    yaml('algorithm: awq'),
    inCfg('enable: true'),
    inCfg('axis: 0', 'block_sizes: {-1: 16}'),
    inCfg('num_bits: e5m2'),
    inCfg('num_bits: 4', 'block_sizes: {-1: 16, -2: 16, type: dynamic}'),
    yaml('algorithm:', '  method: gptq', '  layerwise: {calib_mutates_weights: false}'),
  ];
  for (const text of cases) assert.ok((await engine.validate(text)).length > 0, text);
});

test('legacy forms, imports and recipes are not flagged', async () => {
  const texts = [
    yaml('quant_cfg:', '  "*weight_quantizer": {num_bits: 8, axis: 0}', '  nn.Conv2d:', '    "*input_quantizer": {enable: false}'),
    yaml('quant_cfg:', '  - "*": {enable: false}', '  - "*weight_quantizer": {num_bits: 4, block_sizes: {-1: 128}}'),
    yaml('imports:', '  fp8: qconfig/units/fp8', 'quant_cfg:', '  - quantizer_name: "*input_quantizer"', '    cfg:', '      $import: fp8'),
    yaml('metadata:', '  recipe_type: ptq', 'quantize:', '  algorithm: max'),
  ];
  for (const text of texts) assert.deepEqual(await engine.validate(text), [], text);
});

test('every YAML example config validates cleanly', async () => {
  const files = readdirSync(EXAMPLES).filter((name) => /\.ya?ml$/.test(name));
  assert.ok(files.length > 0);
  for (const name of files) {
    const text = readFileSync(path.join(EXAMPLES, name), 'utf8');
    assert.ok(text.startsWith(YAML_MODELINE), `${name} must start with the modeline`);
    assert.deepEqual(await engine.validate(text, name), [], name);
  }
});

test('every packaged preset validates cleanly, imports unresolved', async () => {
  const dir = path.join(ROOT, 'packages/qconfig/src/qconfig/presets');
  const files = readdirSync(dir).filter((name) => name.endsWith('.yaml'));
  assert.ok(files.length >= 30, `${files.length} presets`);
  for (const name of files) {
    const text = `${YAML_MODELINE}\n${readFileSync(path.join(dir, name), 'utf8')}`;
    assert.deepEqual(await engine.validate(text, name), [], name);
  }
});
