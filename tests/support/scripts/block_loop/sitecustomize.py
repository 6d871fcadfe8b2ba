"""Loaded by a daemon the tests start with this directory on PYTHONPATH: SIGUSR1 then blocks
the main thread (the asyncio event loop) for $OAUTHD_TEST_BLOCK_SECONDS, from outside the
product. A Python signal handler always runs in the main thread, between bytecodes, so the
loop is stuck for that long while every other thread of the process goes on running."""

import os
import signal
import time

_SECONDS = float(os.environ.get("OAUTHD_TEST_BLOCK_SECONDS", "0"))

if _SECONDS > 0:
    signal.signal(signal.SIGUSR1, lambda signum, frame: time.sleep(_SECONDS))
