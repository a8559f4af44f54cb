"""A Python child started by multiproc's `Process::command`, driven by tests/python_interop.rs.

The Rust side passes one duplex connection with `Command::pass`; its fd number arrives in the
`MULTIPROC_FDS` environment variable. This script wraps it in stock CPython
`multiprocessing.connection.Connection` (the C `_multiprocessing.Connection` on 2.7, whose
`multiprocessing.connection` has no such name), echoes every message with `send_bytes` until
`EOFError`, reports on stdout and exits 0. Runs on 2.7 and 3.6+: no f-strings.

    python -u command_child.py
"""

import os
import sys

try:
    from multiprocessing.connection import Connection  # 3.x: the pure-Python class
except ImportError:  # 2.7: the C type, Connection(handle, readable=True, writable=True)
    from _multiprocessing import Connection


def main():
    fds = os.environ["MULTIPROC_FDS"]
    sys.stdout.write("fds %s\n" % fds)
    conn = Connection(int(fds))
    n = 0
    while True:
        try:
            message = conn.recv_bytes()
        except EOFError:
            break
        conn.send_bytes(message)
        n += 1
    sys.stdout.write("echoed %d\n" % n)


if __name__ == "__main__":
    main()
