import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JsonSyntaxError, parseJson } from '../src/index.js';

test('integers stay exact, other values read as JSON.parse does', () => {
  const text = '{"a": 170141183460469231731687303715884105727, "b": -9007199254740993, "c": 12, "d": 1.5e3, "e": "x\\u00e9\\n", "f": [true, false, null, {}], "g": []}';
  assert.deepEqual(parseJson(text), {
    a: 170141183460469231731687303715884105727n,
    b: -9007199254740993n,
    c: 12,
    d: 1500,
    e: 'xé\n',
    f: [true, false, null, {}],
    g: [],
  });
});

test('malformed JSON is refused with its offset', () => {
  for (const bad of ['{', '[1,]', '{"a" 1}', '01', '"abc', '1 2', '{"__proto__": 1} x']) {
    assert.throws(() => parseJson(bad), JsonSyntaxError, bad);
  }
  // A `__proto__` key is data, not a prototype.
  const o = parseJson('{"__proto__": {"polluted": 1}}') as Record<string, unknown>;
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.deepEqual(Object.keys(o), ['__proto__']);
});
