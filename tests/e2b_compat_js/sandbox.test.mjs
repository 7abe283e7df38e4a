// E2B's JavaScript SDK (`e2b`), unchanged, against Sandlot: sandboxes, commands, files, terminals.
// Run by test_e2b_js.py with only the environment `sandlot e2b-env` prints.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { CommandExitError, NotFoundError, Sandbox } from 'e2b'

let sbx

before(async () => {
  sbx = await Sandbox.create('base', { timeoutMs: 600_000, metadata: { suite: 'e2b-js' }, envs: { FROM_CREATE: 'yes' } })
})

after(async () => {
  await sbx?.kill()
})

test('sandboxes: create, info, list, connect, timeout, kill', async () => {
  const info = await sbx.getInfo()
  assert.equal(info.sandboxId, sbx.sandboxId)
  assert.equal(info.templateId, 'base')
  assert.deepEqual(info.metadata, { suite: 'e2b-js' })
  assert.equal(await sbx.isRunning(), true)
  const paginator = Sandbox.list()
  const listed = []
  while (paginator.hasNext) listed.push(...(await paginator.nextItems()))
  assert.ok(listed.some((s) => s.sandboxId === sbx.sandboxId))
  await sbx.setTimeout(900_000)
  const again = await Sandbox.connect(sbx.sandboxId)
  assert.equal((await again.commands.run('echo $FROM_CREATE')).stdout, 'yes\n')

  const short = await Sandbox.create('base', { timeoutMs: 60_000 })
  assert.equal(await short.kill(), true)
  assert.equal(await short.isRunning(), false)
  assert.equal(await Sandbox.kill(short.sandboxId), false)
})

test('commands: foreground with streaming, exit codes, envs and cwd', async () => {
  const out = []
  const err = []
  const r = await sbx.commands.run('echo one; echo two >&2; echo three', {
    onStdout: (d) => out.push(d),
    onStderr: (d) => err.push(d),
  })
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'one\nthree\n')
  assert.equal(r.stderr, 'two\n')
  assert.equal(out.join(''), 'one\nthree\n')
  assert.equal(err.join(''), 'two\n')
  await assert.rejects(sbx.commands.run('echo bad >&2; exit 3'), (e) => {
    assert.ok(e instanceof CommandExitError)
    assert.equal(e.exitCode, 3)
    assert.match(e.stderr, /bad/)
    return true
  })
  const here = await sbx.commands.run('echo $GREETING; pwd', { envs: { GREETING: 'hi' }, cwd: '/tmp' })
  assert.equal(here.stdout, 'hi\n/tmp\n')
})

test('commands: background, stdin, list, connect, kill', async () => {
  const cat = await sbx.commands.run('cat', { background: true, stdin: true })
  assert.ok((await sbx.commands.list()).some((p) => p.pid === cat.pid))
  await sbx.commands.sendStdin(cat.pid, 'ping\n')
  await sbx.commands.closeStdin(cat.pid)
  assert.equal((await cat.wait()).stdout, 'ping\n')

  const chunks = []
  const talker = await sbx.commands.run('for i in 1 2 3; do echo tick $i; sleep 0.2; done', {
    background: true,
    onStdout: (d) => chunks.push(d),
  })
  const done = await talker.wait()
  assert.equal(done.stdout, 'tick 1\ntick 2\ntick 3\n')
  assert.ok(chunks.length >= 2, `output streamed in pieces, got ${JSON.stringify(chunks)}`)

  const slow = await sbx.commands.run('echo early; sleep 1; echo late', { background: true })
  await slow.disconnect()
  const rejoined = await sbx.commands.connect(slow.pid)
  assert.match((await rejoined.wait()).stdout, /late\n$/)

  const sleeper = await sbx.commands.run('sleep 300', { background: true })
  assert.equal(await sleeper.kill(), true)
  await assert.rejects(sleeper.wait(), CommandExitError)
  assert.ok(!(await sbx.commands.list()).some((p) => p.pid === sleeper.pid))
  assert.equal(await sbx.commands.kill(999999), false)
})

test('files: write, read, list, info, rename, remove, watch', async () => {
  await sbx.files.write('/home/user/js/a.txt', 'hello from js')
  assert.equal(await sbx.files.read('/home/user/js/a.txt'), 'hello from js')
  const blob = new Uint8Array([0, 1, 2, 250, 255])
  await sbx.files.write('/home/user/js/b.bin', blob)
  assert.deepEqual(await sbx.files.read('/home/user/js/b.bin', { format: 'bytes' }), blob)
  const names = (await sbx.files.list('/home/user/js')).map((e) => e.name).sort()
  assert.deepEqual(names, ['a.txt', 'b.bin'])
  const info = await sbx.files.getInfo('/home/user/js/a.txt')
  assert.equal(info.size, 13)
  assert.equal(info.type, 'file')
  assert.equal(await sbx.files.exists('/home/user/js/nope'), false)
  assert.equal(await sbx.files.makeDir('/home/user/js/sub'), true)
  await sbx.files.rename('/home/user/js/a.txt', '/home/user/js/sub/c.txt')
  assert.equal(await sbx.files.read('/home/user/js/sub/c.txt'), 'hello from js')
  await sbx.files.remove('/home/user/js/sub')
  assert.equal(await sbx.files.exists('/home/user/js/sub'), false)
  await assert.rejects(sbx.files.read('/home/user/js/missing.txt'), NotFoundError)

  const events = []
  const watcher = await sbx.files.watchDir('/home/user/js', (ev) => events.push(ev))
  await sbx.files.write('/home/user/js/new.txt', 'x')
  for (let i = 0; i < 50 && !events.some((e) => e.name === 'new.txt'); i++) await new Promise((r) => setTimeout(r, 100))
  await watcher.stop()
  assert.ok(events.some((e) => e.name === 'new.txt'), JSON.stringify(events))
})

test('pty: a terminal with input, resize and exit', async () => {
  let output = ''
  const decoder = new TextDecoder()
  const term = await sbx.pty.create({ cols: 100, rows: 30, onData: (d) => (output += decoder.decode(d)) })
  const enc = new TextEncoder()
  await sbx.pty.sendInput(term.pid, enc.encode('stty size\n'))
  for (let i = 0; i < 100 && !output.includes('30 100'); i++) await new Promise((r) => setTimeout(r, 100))
  assert.match(output, /30 100/)
  await sbx.pty.resize(term.pid, { cols: 132, rows: 50 })
  await sbx.pty.sendInput(term.pid, enc.encode('stty size; exit 4\n'))
  const res = await term.wait().catch((e) => e)
  assert.match(output, /50 132/)
  assert.equal(res.exitCode, 4)
})
