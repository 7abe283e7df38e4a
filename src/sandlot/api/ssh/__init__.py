"""The SSH gateway: `ssh -p PORT SANDBOX_ID@host` into a sandbox (`sandlot serve --ssh-port PORT`).

- `server`: logins (a team's registered public keys, or an API key as the
  password), shells with a PTY (window resizes, exit status), commands
  (`ssh host 'cmd'`), and `ssh -L` forwards to ports inside the sandbox over
  the same agent tunnel the port proxy uses;
- `sftp`: sftp and scp (OpenSSH's scp speaks SFTP), on the sandbox's file API.

The user name is the sandbox's id; a login reaches only its team's sandboxes.
The host key is made once and kept in `<data dir>/ssh_host_ed25519_key`.
"""

from __future__ import annotations

from sandlot.api.ssh.server import SshGateway, host_key

__all__ = ["SshGateway", "host_key"]
