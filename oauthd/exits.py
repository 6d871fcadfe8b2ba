"""How the `oauthd` command ends: the one table of exit codes, named after sysexits.h.

A leaf that imports nothing, so that every room (the persistence engine included) can give
its errors an `exit_code` from here instead of a bare number.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # a checked condition failed (state verify found damage, admin refused)
    USAGE = 64  # EX_USAGE: the command line is wrong
    DATAERR = 65  # EX_DATAERR: what was given is refused (a client's scope, keys, resource)
    NOINPUT = 66  # EX_NOINPUT: what the command names cannot be read or does not exist (a
    # JWKS file, a signing key)
    UNAVAILABLE = 69  # EX_UNAVAILABLE: the backend or the running daemon cannot be reached
    OSERR = 71  # EX_OSERR: the port or the admin socket cannot be bound
    TEMPFAIL = 75  # EX_TEMPFAIL: another daemon holds the state dir; try again later
    CONFIG = 78  # EX_CONFIG: an operator has to act (config, damaged state, schema)
    INTERRUPTED = 130  # Ctrl-C at a prompt
