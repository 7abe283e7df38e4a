// E2B's `@e2b/code-interpreter` (JavaScript), unchanged, against Sandlot's built-in interpreter.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { Sandbox } from '@e2b/code-interpreter'

let sbx

before(async () => {
  sbx = await Sandbox.create({ timeoutMs: 600_000 }) // its default template, code-interpreter-v1
})

after(async () => {
  await sbx?.kill()
})

test('state persists; the last expression is the result', async () => {
  await sbx.runCode('x = 40')
  const ex = await sbx.runCode('x + 2')
  assert.equal(ex.error, undefined)
  assert.equal(ex.text, '42')
  assert.ok(ex.results[0].isMainResult)
})

test('streams output and reports errors', async () => {
  const out = []
  const ex = await sbx.runCode('print("a"); print("b")', { onStdout: (m) => out.push(m.line) })
  assert.equal(ex.logs.stdout.join(''), 'a\nb\n') // the kernel may send both lines in one message
  assert.equal(out.join(''), 'a\nb\n')
  const bad = await sbx.runCode('1 / 0')
  assert.equal(bad.error.name, 'ZeroDivisionError')
})

test('figures come back as PNG', async () => {
  const ex = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()')
  const png = ex.results.find((r) => r.png)?.png
  assert.ok(png, JSON.stringify(ex.results))
  assert.equal(Buffer.from(png, 'base64').subarray(1, 4).toString(), 'PNG')
})

test('contexts have their own state and directory; bash works', async () => {
  const ctx = await sbx.createCodeContext({ cwd: '/tmp' })
  const ex = await sbx.runCode('import os; os.getcwd()', { context: ctx })
  assert.equal(ex.text, "'/tmp'")
  const sh = await sbx.runCode('echo $((6 * 7))', { language: 'bash' })
  assert.deepEqual(sh.logs.stdout, ['42\n'])
})
