"""The control plane's records: API keys and sandboxes, in SQLite or PostgreSQL.

One code path for both databases: SQLAlchemy Core with portable types only (no
JSON columns: metadata lives in its own key/value table, so filtering by it is
plain SQL everywhere). The engine is synchronous; `Store` runs each call in a
worker thread so the event loop (and the node on it) never blocks on the disk.

Timestamps are Unix seconds (float): what the API shows, and comparable in SQL.

Everything the server must still know after a restart lives here, never only in
a process's memory (API replicas will share one PostgreSQL): sandbox records
with their deadlines and idle clocks (`active_at`), and warm pool sizes.

A database that does not answer (PostgreSQL stopped, a network split) is a
DatabaseUnavailableError (503) for the request at hand; the engine's pool
checks connections before use (`pool_pre_ping`), so the first request after the
database is back succeeds with no restart. A full disk under SQLite is a NoSpaceError.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sandlot import errors

__all__ = [
    "ACTIVE_STATES",
    "QUOTA_FIELDS",
    "KeyRecord",
    "PortAccessRecord",
    "SandboxRecord",
    "SshKeyRecord",
    "Store",
    "database_url_for",
]

T = TypeVar("T")

#: Store.on_transition: (connection, sandbox id, team, old state or None, new state, exit reason)
TransitionHook = Callable[[Connection, str, str, str | None, str, str | None], None]

#: States in which a sandbox holds resources on its node (a hibernated one: its disk).
ACTIVE_STATES = ("starting", "running", "paused", "hibernated")

metadata_obj = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata_obj,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("team", sa.String(128), nullable=False, index=True),
    sa.Column("name", sa.String(256), nullable=False, default=""),
    sa.Column("admin", sa.Boolean, nullable=False, default=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

# SSH public keys (the SSH gateway): each key logs in as one team; a key belongs to one team only.
ssh_keys = sa.Table(
    "ssh_keys",
    metadata_obj,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("team", sa.String(128), nullable=False, index=True),
    sa.Column("name", sa.String(256), nullable=False, default=""),
    sa.Column("fingerprint", sa.String(128), nullable=False, unique=True),
    sa.Column("public_key", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

sandboxes = sa.Table(
    "sandboxes",
    metadata_obj,
    sa.Column("sandbox_id", sa.String(64), primary_key=True),
    sa.Column("team", sa.String(128), nullable=False, index=True),
    sa.Column("template", sa.String(256), nullable=False),
    sa.Column("runtime", sa.String(64), nullable=False),
    sa.Column("cpu", sa.Float, nullable=False),
    sa.Column("memory_mb", sa.Integer, nullable=False),
    sa.Column("disk_mb", sa.Integer, nullable=False),
    sa.Column("state", sa.String(32), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("ends_at", sa.Float, nullable=False),
    sa.Column("exit_reason", sa.Text, nullable=True),
    # lifecycle: a persistent sandbox is never killed by a timeout (it hibernates when idle);
    # on_timeout says what the timeout does to an ephemeral one: kill, pause or hibernate;
    # auto_resume: paused or hibernated, the next request to it resumes it.
    sa.Column("persistent", sa.Boolean, nullable=False, default=False),
    sa.Column("on_timeout", sa.String(16), nullable=False, default="kill"),
    sa.Column("auto_resume", sa.Boolean, nullable=False, default=False),
    # when it was killed (retention of its checkpoints counts from here); NULL while it lives
    sa.Column("ended_at", sa.Float, nullable=True),
    # when the sandbox last served a request (idle hibernation); 0: not since it was created
    sa.Column("active_at", sa.Float, nullable=False, default=0.0),
    # the node that holds it (`NodeClient.name`; "local" for the node `sandlot serve` embeds)
    sa.Column("node", sa.String(128), nullable=False, default="local"),
    # the labels a node must carry to hold it (JSON): placement heeds them on a create and on a move
    sa.Column("node_labels", sa.Text, nullable=False, default="{}"),
    sa.Index("ix_sandboxes_team_created", "team", "created_at", "sandbox_id"),
)

#: A team's own limits (api/teams.py); NULL: the server's default.
QUOTA_FIELDS = ("max_sandboxes", "max_disk_mb", "max_lifetime_s", "checkpoint_retention_s")

teams = sa.Table(
    "teams",
    metadata_obj,
    sa.Column("team", sa.String(128), primary_key=True),
    *(sa.Column(name, sa.BigInteger, nullable=True) for name in QUOTA_FIELDS),
    sa.Column("updated_at", sa.Float, nullable=False),
)

#: warm pools: started sandboxes a node keeps ready, per template and runtime
pools = sa.Table(
    "pools",
    metadata_obj,
    sa.Column("template", sa.String(256), primary_key=True),
    sa.Column("runtime", sa.String(64), primary_key=True),
    sa.Column("size", sa.Integer, nullable=False),
)

sandbox_metadata = sa.Table(
    "sandbox_metadata",
    metadata_obj,
    sa.Column("sandbox_id", sa.String(64), sa.ForeignKey("sandboxes.sandbox_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


#: Who may reach a sandbox's exposed ports (see port_access.py): its access token, the ports
#: open to anyone (comma-separated), or all of them. Kept with the records, not on the node, so
#: that every API replica answers the same and a restart keeps them.
port_access = sa.Table(
    "port_access",
    metadata_obj,
    sa.Column("sandbox_id", sa.String(64), primary_key=True),
    sa.Column("token", sa.String(128), nullable=False),
    sa.Column("public", sa.Text, nullable=False, default=""),
    sa.Column("all_public", sa.Boolean, nullable=False, default=False),
)

#: Server-wide secrets (the E2B access-token key): in the database, so every replica of a
#: fleet signs and checks with the same one.
server_secrets = sa.Table(
    "server_secrets",
    metadata_obj,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)


@dataclass
class KeyRecord:
    key_id: str
    team: str
    name: str
    admin: bool
    created_at: float
    revoked_at: float | None = None


@dataclass
class SshKeyRecord:
    key_id: str
    team: str
    name: str
    fingerprint: str
    public_key: str
    created_at: float


@dataclass
class SandboxRecord:
    sandbox_id: str
    team: str
    template: str
    runtime: str
    cpu: float
    memory_mb: int
    disk_mb: int
    state: str
    created_at: float
    ends_at: float
    exit_reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    persistent: bool = False
    on_timeout: str = "kill"
    auto_resume: bool = False
    ended_at: float | None = None
    active_at: float = 0.0
    node: str = "local"
    node_labels: dict[str, str] = field(default_factory=dict)


@dataclass
class PortAccessRecord:
    token: str
    public: set[int] = field(default_factory=set)
    #: every port public (E2B's default: `allowPublicTraffic`)
    all_public: bool = False


# The statements of the hot queries (every request's key and sandbox, every create's quota and
# checkpoint owners), built once: SQLAlchemy keys its cache of compiled SQL by a walk of the
# statement, memoized on the statement object, and a statement built afresh for each call cost
# ~200 µs of CPU more per query than one built here (measured with the key lookup and the sandbox read).
_KEY_BY_HASH = sa.select(*(api_keys.c[n] for n in KeyRecord.__dataclass_fields__)).where(
    api_keys.c.hash == sa.bindparam("key_hash")
)
_SANDBOX = sa.select(sandboxes).where(sandboxes.c.sandbox_id == sa.bindparam("sandbox_id"))
_TEAMS_SANDBOX = _SANDBOX.where(sandboxes.c.team == sa.bindparam("team"))
_METADATA_OF = sa.select(sandbox_metadata.c.sandbox_id, sandbox_metadata.c.key, sandbox_metadata.c.value).where(
    sandbox_metadata.c.sandbox_id.in_(sa.bindparam("ids", expanding=True))
)
_TEAM_QUOTA = sa.select(*(teams.c[f] for f in QUOTA_FIELDS)).where(teams.c.team == sa.bindparam("team"))
_OWNERS = sa.select(sandboxes.c.sandbox_id, sandboxes.c.team, sandboxes.c.state, sandboxes.c.ended_at).where(
    sandboxes.c.sandbox_id.in_(sa.bindparam("ids", expanding=True))
)
_PORT_ACCESS = sa.select(port_access).where(port_access.c.sandbox_id == sa.bindparam("sandbox_id"))


def database_url_for(data_dir: Path, url: str | None) -> str:
    """The SQLAlchemy URL: `url` (PostgreSQL via psycopg 3) or SQLite in the data dir."""
    if not url:
        return f"sqlite:///{Path(data_dir) / 'sandlot.db'}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


#: Columns added after a database may already exist, with the SQL default old rows get
#: (None: a nullable column, NULL in old rows).
#: `create_all` makes missing tables only; these are added to tables made by an older release.
ADDED_COLUMNS: list[tuple[str, str, str | None]] = [
    ("sandboxes", "persistent", "false"),
    ("sandboxes", "on_timeout", "'kill'"),
    ("sandboxes", "auto_resume", "false"),
    ("sandboxes", "ended_at", None),
    ("sandboxes", "active_at", "0"),
    ("sandboxes", "node", "'local'"),
    ("sandboxes", "node_labels", "'{}'"),
    ("reservations", "cpu", "0"),
]


def _add_new_columns(engine: sa.Engine) -> None:
    inspector = sa.inspect(engine)
    with engine.begin() as conn:
        for table, column, default in ADDED_COLUMNS:
            if column in {c["name"] for c in inspector.get_columns(table)}:
                continue
            sql_type = metadata_obj.tables[table].c[column].type.compile(dialect=engine.dialect)
            rest = "" if default is None else f" NOT NULL DEFAULT {default}"
            conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}{rest}"))


def encode_cursor(created_at: float, sandbox_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, sandbox_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, sandbox_id = json.loads(raw)
        if isinstance(created_at, bool) or not isinstance(created_at, (int, float)) or not isinstance(sandbox_id, str):
            raise ValueError
        return float(created_at), sandbox_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise errors.InvalidArgumentError(
            "cursor is not one this server handed out; pass next_cursor from the previous page", field="cursor"
        ) from None


class Store:
    """Records of keys and sandboxes. Every public method is async and thread-backed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        # Its own threads: every request reads the store, and the default executor's few
        # threads may all be busy with slow disk work (mounts, mkfs, unpacks on a loaded host).
        self._threads = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="store")
        #: called in the transaction of every record made (old state None) or state set, with
        #: (connection, sandbox id, team, old state, new state, exit reason): the event log (api/events.py)
        self.on_transition: TransitionHook | None = None
        #: bumped after each write through this process that can change what times out when (a
        #: record made, its state or timeout set): the reaper queries again only then, or when
        #: the next timeout it knows of is due (api/service.py)
        self.deadline_writes = 0

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def transaction(self, fn: Callable[[Connection], T], *, lock: threading.Lock | None = None) -> T:
        """Run `fn` in one transaction (for modules with tables of their own), all of it under `lock` if given."""
        return await self._run(fn, lock)

    async def _run(self, fn: Callable[[Connection], T], lock: threading.Lock | None = None) -> T:
        def txn() -> T:
            with lock or contextlib.nullcontext(), self.engine.begin() as conn:
                return fn(conn)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, txn)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise _unavailable(exc, self.dialect) from None

    async def init(self) -> None:
        # The modules with tables of their own on this metadata import this one; their tables must exist
        # (and gain their added columns) whichever of them this process has imported so far.
        from sandlot.api import events, reservations, webhooks  # noqa: F401
        from sandlot.api.fleet import registry  # noqa: F401

        await asyncio.to_thread(metadata_obj.create_all, self.engine)
        await asyncio.to_thread(_add_new_columns, self.engine)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.dispose)
        self._threads.shutdown(wait=False)

    async def secret(self, name: str, new: bytes) -> bytes:
        """The secret `name`; the first caller's `new` when there is none yet (every caller gets the same)."""

        def get(c: Connection) -> bytes | None:
            value = c.execute(sa.select(server_secrets.c.value).where(server_secrets.c.name == name)).scalar()
            return bytes.fromhex(value) if value is not None else None

        if (have := await self._run(get)) is not None:
            return have
        try:
            await self._run(lambda c: c.execute(server_secrets.insert().values(name=name, value=new.hex())))
        except sa.exc.IntegrityError:  # another replica made it first
            pass
        got = await self._run(get)
        assert got is not None
        return got

    # ------------------------------------------------------------ keys

    async def add_key(self, key: KeyRecord, key_hash: str) -> None:
        row = {**key.__dict__, "hash": key_hash}
        await self._run(lambda c: c.execute(api_keys.insert().values(**row)))

    async def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        return await self._run(lambda c: _key(c, key_hash))

    async def key_and_sandbox(self, key_hash: str, sandbox_id: str) -> tuple[KeyRecord | None, SandboxRecord | None]:
        """The key whose hash is `key_hash`, and the record of `sandbox_id` when it is that key's team's,
        read in one transaction: every request to a sandbox needs both, and a trip to the store's
        threads cost such a request 0.2 ms idle and ~0.9 ms on a host busy with sandboxes."""

        def q(c: Connection) -> tuple[KeyRecord | None, SandboxRecord | None]:
            key = _key(c, key_hash)
            return key, (_sandbox(c, sandbox_id, key.team) if key is not None else None)

        return await self._run(q)

    async def list_keys(self) -> list[KeyRecord]:
        def q(c: Connection) -> list[KeyRecord]:
            cols = [api_keys.c[n] for n in KeyRecord.__dataclass_fields__]
            rows = c.execute(sa.select(*cols).order_by(api_keys.c.created_at, api_keys.c.key_id))
            return [KeyRecord(**r._mapping) for r in rows]

        return await self._run(q)

    async def count_keys(self) -> int:
        return await self._run(lambda c: int(c.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one()))

    async def revoke_key(self, key_id: str) -> bool:
        def q(c: Connection) -> bool:
            res = c.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            return bool(res.rowcount)

        return await self._run(q)

    # ------------------------------------------------------------ SSH keys

    async def add_ssh_key(self, rec: SshKeyRecord) -> None:
        """Raises ConflictError when the key is registered already (to any team)."""

        def q(c: Connection) -> None:
            if c.execute(sa.select(ssh_keys.c.team).where(ssh_keys.c.fingerprint == rec.fingerprint)).first():
                raise errors.ConflictError(f"SSH key {rec.fingerprint} is registered already", field="public_key")
            c.execute(ssh_keys.insert().values(**rec.__dict__))

        await self._run(q)

    async def ssh_keys(self, team: str | None = None) -> list[SshKeyRecord]:
        """The SSH keys of `team` (of every team when None), oldest first."""

        def q(c: Connection) -> list[SshKeyRecord]:
            stmt = sa.select(ssh_keys).order_by(ssh_keys.c.created_at, ssh_keys.c.key_id)
            if team is not None:
                stmt = stmt.where(ssh_keys.c.team == team)
            return [SshKeyRecord(**r._mapping) for r in c.execute(stmt)]

        return await self._run(q)

    async def ssh_key_by_fingerprint(self, fingerprint: str) -> SshKeyRecord | None:
        def q(c: Connection) -> SshKeyRecord | None:
            row = c.execute(sa.select(ssh_keys).where(ssh_keys.c.fingerprint == fingerprint)).first()
            return SshKeyRecord(**row._mapping) if row else None

        return await self._run(q)

    async def remove_ssh_key(self, key_id: str, team: str | None) -> bool:
        """Remove a key (of `team`, unless None); False when there is no such key."""

        def q(c: Connection) -> bool:
            stmt = ssh_keys.delete().where(ssh_keys.c.key_id == key_id)
            if team is not None:
                stmt = stmt.where(ssh_keys.c.team == team)
            return bool(c.execute(stmt).rowcount)

        return await self._run(q)

    # ------------------------------------------------------------ sandboxes

    async def add_sandbox(self, rec: SandboxRecord, also: Callable[[Connection], None] | None = None) -> None:
        await self.add_sandboxes([rec], also)

    async def add_sandboxes(
        self, recs: Sequence[SandboxRecord], also: Callable[[Connection], None] | None = None
    ) -> None:
        """Records of new sandboxes, all or none (one transaction: a fork is never half recorded);
        `also(c)` runs in that transaction (what must commit with them: releasing the room they took)."""

        def q(c: Connection) -> None:
            for rec in recs:
                row = {k: v for k, v in rec.__dict__.items() if k != "metadata"}
                row["node_labels"] = json.dumps(rec.node_labels, sort_keys=True)
                c.execute(sandboxes.insert().values(**row))
                if rec.metadata:
                    c.execute(
                        sandbox_metadata.insert(),
                        [{"sandbox_id": rec.sandbox_id, "key": k, "value": v} for k, v in rec.metadata.items()],
                    )
                if self.on_transition is not None:
                    self.on_transition(c, rec.sandbox_id, rec.team, None, rec.state, None)
            if also is not None:
                also(c)

        await self._run(q)
        self.deadline_writes += 1  # the reaper looks again (written: it sees them)

    async def get_sandbox(self, sandbox_id: str, team: str | None = None) -> SandboxRecord | None:
        """One record; with `team`, only that team's (another team's id is simply not found)."""

        return await self._run(lambda c: _sandbox(c, sandbox_id, team))

    async def list_sandboxes(
        self,
        *,
        team: str | None = None,
        states: Sequence[str] = (),
        metadata: dict[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
        newest_first: bool = False,
        created_after: float | None = None,
        templates: Sequence[str] = (),
    ) -> tuple[list[SandboxRecord], str | None]:
        """A page of records ordered by creation (oldest first, or newest first), and the cursor of the
        next page (None at the end). `created_after` and `templates` narrow the list further."""
        after = decode_cursor(cursor) if cursor else None

        def q(c: Connection) -> tuple[list[SandboxRecord], str | None]:
            stmt = sa.select(sandboxes)
            if team is not None:
                stmt = stmt.where(sandboxes.c.team == team)
            if states:
                stmt = stmt.where(sandboxes.c.state.in_(list(states)))
            for key, value in (metadata or {}).items():
                m = sandbox_metadata
                stmt = stmt.where(
                    sa.exists().where(m.c.sandbox_id == sandboxes.c.sandbox_id, m.c.key == key, m.c.value == value)
                )
            if created_after is not None:
                stmt = stmt.where(sandboxes.c.created_at >= created_after)
            if templates:
                stmt = stmt.where(sandboxes.c.template.in_(list(templates)))
            order_key = sa.tuple_(sandboxes.c.created_at, sandboxes.c.sandbox_id)
            if after is not None:
                mark = sa.tuple_(*after)
                stmt = stmt.where(order_key < mark if newest_first else order_key > mark)
            if newest_first:
                stmt = stmt.order_by(sandboxes.c.created_at.desc(), sandboxes.c.sandbox_id.desc())
            else:
                stmt = stmt.order_by(sandboxes.c.created_at, sandboxes.c.sandbox_id)
            stmt = stmt.limit(limit + 1)
            recs = _records(c, stmt)
            more = len(recs) > limit
            recs = recs[:limit]
            nxt = encode_cursor(recs[-1].created_at, recs[-1].sandbox_id) if more and recs else None
            return recs, nxt

        return await self._run(q)

    async def sandbox_counts(self) -> list[tuple[str, str, str, int]]:
        """(team, template, state, how many) of every record, for /metrics."""

        def q(c: Connection) -> list[tuple[str, str, str, int]]:
            cols = (sandboxes.c.team, sandboxes.c.template, sandboxes.c.state)
            stmt = sa.select(*cols, sa.func.count()).group_by(*cols)
            return [(str(t), str(tp), str(s), int(n)) for t, tp, s, n in c.execute(stmt)]

        return await self._run(q)

    async def count_active(self, team: str) -> int:
        def q(c: Connection) -> int:
            stmt = sa.select(sa.func.count()).where(sandboxes.c.team == team, sandboxes.c.state.in_(ACTIVE_STATES))
            return int(c.execute(stmt).scalar_one())

        return await self._run(q)

    @staticmethod
    def holdings(c: Connection, team: str) -> tuple[int, int]:
        """The team's live sandboxes and their disk limits summed (MiB), within a transaction."""
        stmt = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sandboxes.c.disk_mb), 0)).where(
            sandboxes.c.team == team, sandboxes.c.state.in_(ACTIVE_STATES)
        )
        n, mb = c.execute(stmt).one()
        return int(n), int(mb)

    async def set_state(self, sandbox_id: str, state: str, exit_reason: str | None = None) -> None:
        values: dict[str, Any] = {"state": state}
        if exit_reason is not None:
            values["exit_reason"] = exit_reason
        if state == "killed":  # the first kill counts (a record reconciled twice keeps its time)
            values["ended_at"] = sa.func.coalesce(sandboxes.c.ended_at, time.time())
        hook = self.on_transition

        def q(c: Connection) -> None:
            where = sandboxes.c.sandbox_id == sandbox_id
            old = c.execute(sa.select(sandboxes.c.team, sandboxes.c.state).where(where)).first() if hook else None
            c.execute(sandboxes.update().where(where).values(**values))
            if hook is not None and old is not None:
                hook(c, sandbox_id, str(old.team), str(old.state), state, exit_reason)

        await self._run(q)
        self.deadline_writes += 1

    async def set_node(self, sandbox_id: str, node: str, *, was: str) -> bool:
        """Place the sandbox's record on `node` if it is still on node `was` (a move); whether it was."""
        where = sa.and_(sandboxes.c.sandbox_id == sandbox_id, sandboxes.c.node == was)
        return bool(await self._run(lambda c: c.execute(sandboxes.update().where(where).values(node=node)).rowcount))

    async def set_ends_at(self, sandbox_id: str, ends_at: float) -> None:
        await self._run(
            lambda c: c.execute(sandboxes.update().where(sandboxes.c.sandbox_id == sandbox_id).values(ends_at=ends_at))
        )
        self.deadline_writes += 1

    async def touch_many(self, clocks: dict[str, float]) -> None:
        """Each sandbox served a request at its time (one transaction; no idle clock moves back)."""
        stmt = (
            sandboxes.update()
            .where(sandboxes.c.sandbox_id == sa.bindparam("sid"), sandboxes.c.active_at < sa.bindparam("at"))
            .values(active_at=sa.bindparam("at"))
        )
        rows = [{"sid": sid, "at": at} for sid, at in clocks.items()]
        await self._run(lambda c: c.execute(stmt, rows))

    async def expired(self, now: float) -> tuple[list[str], float]:
        """The sandboxes past their timeout at `now`, and the next timeout after it (inf: none)."""

        def q(c: Connection) -> tuple[list[str], float]:
            # Persistent sandboxes have no timeout; one paused at its timeout stays paused.
            timed = sa.and_(
                sandboxes.c.state.in_(ACTIVE_STATES),
                sandboxes.c.persistent.is_(False),
                sa.or_(sandboxes.c.on_timeout == "kill", sandboxes.c.state == "running"),
            )
            ids = [r[0] for r in c.execute(sa.select(sandboxes.c.sandbox_id).where(timed, sandboxes.c.ends_at <= now))]
            nxt = c.execute(sa.select(sa.func.min(sandboxes.c.ends_at)).where(timed, sandboxes.c.ends_at > now))
            return ids, float(nxt.scalar_one() or math.inf)

        return await self._run(q)

    async def active(self, *, persistent: bool | None = None) -> list[SandboxRecord]:
        """Records in an active state (only persistent ones, or only ephemeral ones, when asked)."""
        stmt = sa.select(sandboxes).where(sandboxes.c.state.in_(ACTIVE_STATES))
        if persistent is not None:
            stmt = stmt.where(sandboxes.c.persistent.is_(persistent))
        return await self._run(lambda c: _records(c, stmt))

    async def active_disk_mb(self, team: str) -> int:
        """The disk limits of the team's live sandboxes, summed."""

        def q(c: Connection) -> int:
            stmt = sa.select(sa.func.coalesce(sa.func.sum(sandboxes.c.disk_mb), 0)).where(
                sandboxes.c.team == team, sandboxes.c.state.in_(ACTIVE_STATES)
            )
            return int(c.execute(stmt).scalar_one())

        return await self._run(q)

    async def owners(self, sandbox_ids: Sequence[str]) -> dict[str, tuple[str, str, float | None]]:
        """sandbox id -> (team, state, ended_at) for the ids that have records."""
        ids = list(set(sandbox_ids))

        def q(c: Connection) -> dict[str, tuple[str, str, float | None]]:
            out: dict[str, tuple[str, str, float | None]] = {}
            for i in range(0, len(ids), 500):  # bounded IN lists
                for sid, team, state, ended in c.execute(_OWNERS, {"ids": ids[i : i + 500]}):
                    out[sid] = (team, state, ended)
            return out

        return await self._run(q)

    # ------------------------------------------------------------ teams

    async def team_quota(self, team: str) -> dict[str, int | None]:
        """The team's own limits (None where it has none)."""

        def q(c: Connection) -> dict[str, int | None]:
            row = c.execute(_TEAM_QUOTA, {"team": team}).first()
            return dict(zip(QUOTA_FIELDS, row, strict=True)) if row else dict.fromkeys(QUOTA_FIELDS)

        return await self._run(q)

    async def set_team_quota(self, team: str, values: dict[str, int | None]) -> None:
        """Set the given fields of a team's limits (None: back to the server's default)."""
        assert set(values) <= set(QUOTA_FIELDS)

        def q(c: Connection) -> None:
            now = time.time()
            if c.execute(sa.select(teams.c.team).where(teams.c.team == team)).first() is None:
                c.execute(teams.insert().values(team=team, updated_at=now, **values))
            else:
                c.execute(teams.update().where(teams.c.team == team).values(updated_at=now, **values))

        await self._run(q)

    async def team_names(self) -> list[str]:
        """Every team the server knows: of a key, a limit or a sandbox."""

        def q(c: Connection) -> list[str]:
            names = {r[0] for r in c.execute(sa.select(api_keys.c.team).distinct())}
            names |= {r[0] for r in c.execute(sa.select(teams.c.team))}
            names |= {r[0] for r in c.execute(sa.select(sandboxes.c.team).distinct())}
            return sorted(names)

        return await self._run(q)

    # ------------------------------------------------------------ warm pools

    async def set_pool(self, template: str, runtime: str, size: int) -> None:
        """Remember a pool's size (0 forgets the pool)."""

        def q(c: Connection) -> None:
            key = (pools.c.template == template, pools.c.runtime == runtime)
            c.execute(pools.delete().where(*key))
            if size:
                c.execute(pools.insert().values(template=template, runtime=runtime, size=size))

        await self._run(q)

    async def pools(self) -> list[tuple[str, str, int]]:
        """Every pool's (template, runtime, size)."""

        def q(c: Connection) -> list[tuple[str, str, int]]:
            rows = c.execute(sa.select(pools.c.template, pools.c.runtime, pools.c.size).order_by(pools.c.template))
            return [(str(t), str(r), int(n)) for t, r, n in rows]

        return await self._run(q)

    # ------------------------------------------------------------ port access

    async def port_access(self, sandbox_id: str, new_token: str) -> PortAccessRecord:
        """The sandbox's port access; on first use, private ports behind `new_token`."""

        def q(c: Connection) -> PortAccessRecord:
            row = c.execute(_PORT_ACCESS, {"sandbox_id": sandbox_id}).first()
            if row is None:
                c.execute(
                    port_access.insert().values(sandbox_id=sandbox_id, token=new_token, public="", all_public=False)
                )
                return PortAccessRecord(new_token)
            public = {int(p) for p in row.public.split(",") if p}
            return PortAccessRecord(row.token, public, bool(row.all_public))

        try:
            return await self._run(q)
        except sa.exc.IntegrityError:  # a concurrent first use inserted it: read theirs
            return await self._run(q)

    async def set_port_access(self, sandbox_id: str, access: PortAccessRecord) -> None:
        values = {
            "token": access.token,
            "public": ",".join(map(str, sorted(access.public))),
            "all_public": access.all_public,
        }
        await self._run(
            lambda c: c.execute(port_access.update().where(port_access.c.sandbox_id == sandbox_id).values(**values))
        )


def _unavailable(exc: sa.exc.DBAPIError, dialect: str) -> errors.SandlotError:
    """The error a caller gets for a database that did not answer (or, under SQLite, a full disk)."""
    first = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    why = first[0][:300] if first else type(exc).__name__
    if "disk is full" in why or "No space left" in why:
        return errors.NoSpaceError(f"the server's database has no space left ({why}); free space in its data directory")
    return errors.DatabaseUnavailableError(
        f"the server's {dialect} database is unavailable ({why}); the server reconnects by itself, retry shortly"
    )


def _key(c: Connection, key_hash: str) -> KeyRecord | None:
    row = c.execute(_KEY_BY_HASH, {"key_hash": key_hash}).first()
    return KeyRecord(**row._mapping) if row else None


def _sandbox(c: Connection, sandbox_id: str, team: str | None) -> SandboxRecord | None:
    """One record; with `team`, only that team's."""
    if team is None:
        recs = _records(c, _SANDBOX, {"sandbox_id": sandbox_id})
    else:
        recs = _records(c, _TEAMS_SANDBOX, {"sandbox_id": sandbox_id, "team": team})
    return recs[0] if recs else None


def _records(c: Connection, stmt: sa.Select[Any], params: dict[str, Any] | None = None) -> list[SandboxRecord]:
    rows = [dict(r._mapping) for r in c.execute(stmt, params)]
    if not rows:
        return []
    ids = [r["sandbox_id"] for r in rows]
    meta: dict[str, dict[str, str]] = {i: {} for i in ids}
    for sid, key, value in c.execute(_METADATA_OF, {"ids": ids}):
        meta[sid][key] = value
    for r in rows:
        r["node_labels"] = json.loads(r["node_labels"] or "{}")
    return [SandboxRecord(**r, metadata=meta[r["sandbox_id"]]) for r in rows]
