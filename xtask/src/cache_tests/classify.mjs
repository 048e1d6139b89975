// dl7's reading of cache-tests results with the suite's own classifier
// (lib/display.mjs determineTestResult), run by `cargo xtask cache-tests`.
//
// usage: node classify.mjs SUITE_DIR RESULTS.json...
// Prints {file: {id: {kind, result, alone, detail}}}: `result` honours the suite's
// prerequisites (depends_on), `alone` ignores them. The suite's classifier never reports a
// harness failure for a CLI run (it tests `result === false`, which the runner never records),
// so a failure whose error is neither an assertion nor a setup check (a fetch error, a
// timeout, a crash in the test code) is counted as `harness` here.
import { readFileSync } from 'fs'
import { pathToFileURL } from 'url'
import path from 'path'

const suiteDir = path.resolve(process.argv[2])
const load = file => import(pathToFileURL(path.join(suiteDir, file)).href)
const suites = (await load('tests/index.mjs')).default
// The CLI (cli.mjs) runs the Surrogate-Control tests too.
suites.push((await load('tests/surrogate-control.mjs')).default)
const display = await load('lib/display.mjs')

// The classifier answers with its display triple; its third member names the class.
const classes = {
  '✅': 'pass',
  '⛔️': 'fail',
  '⚠️': 'optional',
  Y: 'yes',
  N: 'no',
  '🔹': 'setup',
  '⁉️': 'harness',
  '⚪️': 'dependency',
  '↻': 'retry',
  '-': 'untested'
}

const out = {}
for (const file of process.argv.slice(3)) {
  const results = JSON.parse(readFileSync(file, 'utf8'))
  const tests = {}
  for (const suite of suites) {
    for (const test of suite.tests) {
      if (test.browser_only === true) continue
      const raw = results[test.id]
      const classify = honorDependencies => {
        const symbol = display.determineTestResult(suites, test.id, results, honorDependencies)[2]
        const cls = classes[symbol]
        const failed = cls === 'fail' || cls === 'optional' || cls === 'no'
        return failed && Array.isArray(raw) && raw[0] !== 'Assertion' ? 'harness' : cls
      }
      tests[test.id] = {
        kind: test.kind || 'required',
        result: classify(true),
        alone: classify(false),
        detail: Array.isArray(raw) ? raw.join(': ') : ''
      }
    }
  }
  out[file] = tests
}
console.log(JSON.stringify(out))
