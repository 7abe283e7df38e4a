// E2B's JavaScript SDK (`e2b`, pinned in package.json) against Sandlot: the parity behaviours of
// issue 19 that the JS SDK exposes (the key form, pause and the lifecycle, listing, file metadata,
// symlinks, watches, commands, the default template). Run by test_e2b_js.py with only the
// environment `sandlot e2b-env` prints, plus SANDLOT_FORM (the same key in Sandlot's `sl_` form).
import http from 'node:http'
import { test } from 'node:test'

import { NotFoundError, Sandbox } from 'e2b'
import { ApiClient, ConnectionConfig, Sandbox as KeycheckSandbox } from 'e2b-keycheck'

const OFFLINE = { allowInternetAccess: false }

function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`)
}

function eq(got, want, what) {
  const g = JSON.stringify(got)
  const w = JSON.stringify(want)
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`)
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function until(what, check, ms = 60000) {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(200)
  }
}

async function state(sbx) {
  return (await Sandbox.getInfo(sbx.sandboxId)).state
}

async function rejects(promise, what) {
  try {
    await promise
  } catch (err) {
    return err
  }
  throw new Error(`${what} should have failed`)
}

// GET a sandbox port through Sandlot's port proxy, with E2B's host name (nothing resolves it here)
function getPort(host, path) {
  const api = new URL(process.env.E2B_SANDBOX_URL)
  return new Promise((resolve, reject) => {
    const req = http.get({ host: api.hostname, port: api.port, path, headers: { host }, timeout: 60000 }, (res) => {
      let body = ''
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('error', reject)
  })
}

async function withSandbox(opts, fn) {
  const sbx = await Sandbox.create({ timeoutMs: 300_000, ...OFFLINE, ...opts })
  try {
    return await fn(sbx)
  } finally {
    await sbx.kill()
  }
}

const checks = {
  // The newest release that checks a key's form on the client takes `sandlot e2b-env`'s key...
  async keycheck_release_accepts_the_e2b_form() {
    const sbx = await KeycheckSandbox.create({ timeoutMs: 60_000, ...OFFLINE })
    try {
      eq((await sbx.commands.run('echo checked')).stdout, 'checked\n', 'a command through the key-checking SDK')
    } finally {
      await sbx.kill()
    }
    // ...and refuses Sandlot's own form before sending anything: why the E2B form exists
    const err = await rejects(
      (async () => new ApiClient(new ConnectionConfig({ apiKey: process.env.SANDLOT_FORM })))(),
      'an sl_ key',
    )
    assert(/Invalid API key format/.test(err.message), `the refusal says why: ${err.message}`)
  },

  async default_template() {
    await withSandbox({}, async (sbx) => {
      const r = await sbx.commands.run(
        "whoami; pwd; python -c 'print(6*7)'; node -e 'console.log(6*7)'; npm --version >/dev/null && echo npm; sudo whoami",
      )
      eq(r.stdout.split(/\s+/).filter(Boolean), ['user', '/home/user', '42', '42', 'npm', 'root'], 'the template')
      eq((await sbx.getInfo()).templateId, 'base', 'its template name')
    })
  },

  async pause_and_connect() {
    await withSandbox({}, async (sbx) => {
      const job = await sbx.commands.run('sleep 600', { background: true })
      eq(await sbx.pause(), true, 'pause')
      eq(await sbx.isRunning(), false, 'isRunning after pause')
      eq(await state(sbx), 'paused', 'state')
      await rejects(sbx.commands.run('echo no', { requestTimeoutMs: 30_000 }), 'a command in a paused sandbox')
      eq(await sbx.pause(), false, 'pausing again')
      await Sandbox.connect(sbx.sandboxId)
      eq(await sbx.isRunning(), true, 'isRunning after connect')
      assert((await sbx.commands.list()).some((p) => p.pid === job.pid), 'its processes carried on')
      eq(await Sandbox.pause(sbx.sandboxId), true, 'the static pause')
      eq(await sbx.isRunning(), false, 'isRunning after the static pause')
      await sbx.connect()
      eq((await sbx.commands.run('echo back')).stdout, 'back\n', 'after connect')
    })
  },

  async filesystem_pause() {
    await withSandbox({}, async (sbx) => {
      await sbx.files.write('kept.txt', 'kept')
      await sbx.commands.run('sleep 600', { background: true })
      eq(await sbx.pause({ keepMemory: false }), true, 'a filesystem-only pause')
      eq(await sbx.isRunning(), false, 'isRunning')
      await sbx.connect()
      eq(await sbx.files.read('kept.txt'), 'kept', 'its files')
      eq((await sbx.commands.run('pgrep -x sleep || echo none')).stdout, 'none\n', 'booted afresh')
    })
  },

  async timeout_pause_and_auto_resume() {
    const waking = await Sandbox.create({ timeoutMs: 4000, lifecycle: { onTimeout: 'pause', autoResume: true }, ...OFFLINE })
    const asleep = await Sandbox.create({ timeoutMs: 4000, lifecycle: { onTimeout: 'pause' }, ...OFFLINE })
    try {
      await waking.commands.run('cd /tmp && echo awake > index.html && python3 -m http.server 8000', { background: true })
      const host = waking.getHost(8000)
      await until('the server', async () => (await getPort(host, '/index.html')).status === 200)
      for (const s of [waking, asleep]) await until(`${s.sandboxId} to pause`, async () => (await state(s)) === 'paused')
      eq((await Sandbox.getInfo(waking.sandboxId)).lifecycle, { onTimeout: 'pause', autoResume: true }, 'lifecycle')
      const r = await getPort(host, '/index.html') // traffic to its port wakes it
      eq([r.status, r.body], [200, 'awake\n'], 'the woken server')
      eq(await state(waking), 'running', 'woken')
      eq(await asleep.isRunning(), false, 'without autoResume it stays paused')
      await asleep.connect()
      eq((await asleep.commands.run('echo up')).stdout, 'up\n', 'after connect')
    } finally {
      await waking.kill()
      await asleep.kill()
    }
  },

  async listing() {
    const tag = { listing: `js-${Date.now()}-${Math.random()}` }
    const made = []
    try {
      for (let i = 0; i < 3; i++) made.push(await Sandbox.create({ timeoutMs: 120_000, metadata: tag, ...OFFLINE }))
      await made[1].pause()
      const seen = []
      const pages = Sandbox.list({ query: { metadata: tag }, limit: 1 })
      while (pages.hasNext) seen.push(...(await pages.nextItems()).map((s) => s.sandboxId))
      eq(seen, made.map((s) => s.sandboxId).reverse(), 'newest first, one per page, running and paused')
      const asc = await Sandbox.list({ query: { metadata: tag }, order: 'asc' }).nextItems()
      eq(asc.map((s) => s.sandboxId), made.map((s) => s.sandboxId), 'oldest first')
      const paused = await Sandbox.list({ query: { metadata: tag, state: ['paused'] } }).nextItems()
      eq(paused.map((s) => s.sandboxId), [made[1].sandboxId], 'paused only')
      const since = (await made[1].getInfo()).startedAt
      const later = await Sandbox.list({ query: { metadata: tag, startedAfter: since } }).nextItems()
      eq(later.map((s) => s.sandboxId), [made[2].sandboxId, made[1].sandboxId], 'startedAfter')
      eq((await Sandbox.list({ query: { metadata: tag, template: 'base' } }).nextItems()).length, 3, 'template')
    } finally {
      for (const s of made) await s.kill()
    }
  },

  async files() {
    await withSandbox({}, async (sbx) => {
      for (const dir of ['/home/user/meta', '/tmp/meta']) {
        const w = await sbx.files.write(`${dir}/a.txt`, 'x', { metadata: { owner: 'ana' } })
        eq(w.metadata, { owner: 'ana' }, `${dir}: written`)
        eq((await sbx.files.getInfo(`${dir}/a.txt`)).metadata, { owner: 'ana' }, `${dir}: getInfo`)
        eq((await sbx.files.list(dir)).map((e) => e.metadata), [{ owner: 'ana' }], `${dir}: list`)
        eq((await sbx.files.rename(`${dir}/a.txt`, `${dir}/b.txt`)).metadata, { owner: 'ana' }, `${dir}: rename`)
        await sbx.files.write(`${dir}/b.txt`, 'y')
        eq((await sbx.files.getInfo(`${dir}/b.txt`)).metadata, undefined, `${dir}: cleared by an overwrite`)
      }
      await sbx.commands.run('echo hi > /tmp/f && ln -s /tmp/f /tmp/link')
      const link = await sbx.files.getInfo('/tmp/link')
      // this SDK release shows a link with its target's type (it does not read isSymlink yet)
      eq([link.type, link.symlinkTarget], ['file', '/tmp/f'], 'a symlink')
      const err = await rejects(sbx.files.remove('/tmp/never-there'), 'removing a missing file')
      assert(err instanceof NotFoundError, `E2B's not-found error, got ${err.name}: ${err.message}`)
    })
  },

  async watch_with_entries_and_new_folders() {
    await withSandbox({}, async (sbx) => {
      await sbx.files.makeDir('/tmp/ws')
      const got = {}
      const handle = await sbx.files.watchDir('/tmp/ws', (e) => (got[e.name] = e.entry), {
        recursive: true,
        includeEntry: true,
      })
      await sbx.commands.run('mkdir -p /tmp/ws/a/b && echo x > /tmp/ws/a/b/c.txt')
      await until('the events', async () => 'a/b/c.txt' in got, 30000)
      await handle.stop()
      assert('a' in got && 'a/b' in got, `the new folders: ${Object.keys(got)}`)
      eq([got['a/b/c.txt'].type, got['a/b/c.txt'].path], ['file', '/tmp/ws/a/b/c.txt'], 'the entry')
    })
  },

  async envs_stay_with_their_command() {
    await withSandbox({}, async (sbx) => {
      eq((await sbx.commands.run('echo ${ONLY-unset}', { envs: { ONLY: '1' } })).stdout, '1\n', 'with envs')
      eq((await sbx.commands.run('echo ${ONLY-unset}')).stdout, 'unset\n', 'the next command')
    })
  },

  async killed_mid_command() {
    const sbx = await Sandbox.create({ timeoutMs: 300_000, ...OFFLINE })
    const job = await sbx.commands.run('sleep 600', { background: true })
    const started = Date.now()
    await Sandbox.kill(sbx.sandboxId)
    await rejects(job.wait(), 'waiting on a command of a killed sandbox')
    assert(Date.now() - started < 20000, 'the handle ends when the sandbox dies, not at a timeout')
  },
}

for (const [name, check] of Object.entries(checks)) test(name.replaceAll('_', ' '), check)
