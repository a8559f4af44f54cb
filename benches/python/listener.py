"""CPython's side of benches/listener.rs: multiprocessing.connection Listener and Client over
loopback TCP, with an authkey.

Both cases run in two processes, a parent that measures and a child started with the fork
start method; the parent binds the Listener (127.0.0.1, port 0) before forking:

  tcp_rtt_64     the child connects with Client(address, authkey=KEY) and echoes; the parent
                 accept()s, then times 64-byte send_bytes/recv_bytes round trips; round trips
                 per second
  connect_auth   the child accept()s in a loop, closing each connection; the parent times
                 Client(address, authkey=KEY) followed by close(): connections made and
                 authenticated (both directions, as Client and Listener.accept do) per second

Both processes are pinned to one CPU when the request names one (the forked child inherits
the mask). CPython 3.11 and older send the legacy HMAC-MD5 challenge; 3.12 and newer send
{sha256} ones.

Two ways to run it:

  python3 benches/python/listener.py [CASE...]   run cases standalone and print the results
  python3 benches/python/listener.py --serve     the bench's driver: reads lines
      "CASE WARMUP N CPU" on stdin (CPU -1: unpinned) and answers one line per request, the
      figure, so the Rust bench can interleave Python with its own runs. On "quit" it answers
      "left SOCKETS CHILDREN": the sockets it still has open and its children still alive,
      both 0 unless something leaked.
"""

import multiprocessing
import os
import sys
import time
from multiprocessing.connection import Client, Listener

CTX = multiprocessing.get_context("fork")
KEY = b"multiproc-bench-key"
PAYLOAD_64 = b"x" * 64
LOOPBACK = ("127.0.0.1", 0)


# Bound methods are looked up once, outside the loops: the usual CPython idiom for a hot loop,
# so that the figures are CPython's I/O path rather than attribute lookups.


def _echo(address, total):
    conn = Client(address, authkey=KEY)
    send, recv = conn.send_bytes, conn.recv_bytes
    for _ in range(total):
        send(recv())
    conn.close()


def _accept_loop(listener, total):
    accept = listener.accept
    for _ in range(total):
        accept().close()
    listener.close()


def _pinned(cpu):
    saved = os.sched_getaffinity(0)
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    return saved


def _join(proc, what):
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError("%s child exited with %r" % (what, proc.exitcode))


def tcp_rtt(warmup, n, cpu):
    """64-byte round trips per second over an authenticated TCP connection."""
    saved = _pinned(cpu)
    try:
        with Listener(LOOPBACK, authkey=KEY) as listener:
            proc = CTX.Process(target=_echo, args=(listener.address, warmup + n))
            proc.daemon = True
            proc.start()
            conn = listener.accept()
        with conn:
            payload = PAYLOAD_64
            send, recv = conn.send_bytes, conn.recv_bytes
            for _ in range(warmup):
                send(payload)
                recv()
            start = time.perf_counter()
            for _ in range(n):
                send(payload)
                got = recv()
            elapsed = time.perf_counter() - start
        if len(got) != 64:
            raise RuntimeError("echo returned %d bytes" % len(got))
    finally:
        os.sched_setaffinity(0, saved)
    _join(proc, "echo")
    return n / elapsed


def connect_auth(warmup, n, cpu):
    """Client(address, authkey=KEY) + close() per second, against a forked Listener."""
    saved = _pinned(cpu)
    try:
        listener = Listener(LOOPBACK, authkey=KEY)
        address = listener.address
        proc = CTX.Process(target=_accept_loop, args=(listener, warmup + n))
        proc.daemon = True
        proc.start()
        # The child has its own copy; this one must not keep the port open.
        listener.close()
        for _ in range(warmup):
            Client(address, authkey=KEY).close()
        start = time.perf_counter()
        for _ in range(n):
            Client(address, authkey=KEY).close()
        elapsed = time.perf_counter() - start
    finally:
        os.sched_setaffinity(0, saved)
    _join(proc, "accepting")
    return n / elapsed


CASES = {"tcp_rtt_64": tcp_rtt, "connect_auth": connect_auth}


def run(case, warmup, n, cpu):
    return CASES[case](warmup, n, cpu)


# Standalone defaults: (warmup, n) per case.
DEFAULTS = {
    "tcp_rtt_64": (2000, 20000),
    "connect_auth": (300, 3000),
}


def leftovers():
    """Sockets this process still has open, and children still alive."""
    sockets = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd).startswith("socket:"):
                sockets += 1
        except OSError:
            pass  # the directory's own fd, closed by now
    return sockets, len(multiprocessing.active_children())


def serve():
    print("ready", sys.version.split()[0], flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        case, warmup, n, cpu = words[0], int(words[1]), int(words[2]), int(words[3])
        try:
            print(repr(run(case, warmup, n, cpu)), flush=True)
        except Exception as e:  # report to the driver rather than dying silently
            print("error %s: %s" % (type(e).__name__, e), flush=True)
    print("left %d %d" % leftovers(), flush=True)


def main(argv):
    if argv[:1] == ["--serve"]:
        serve()
        return
    cases = argv or list(DEFAULTS)
    cpu = min(os.sched_getaffinity(0))
    print("CPython", sys.version.split()[0], "pinned to CPU", cpu)
    for case in cases:
        warmup, n = DEFAULTS[case]
        unit = "rt/s" if case == "tcp_rtt_64" else "conn/s"
        print("%-14s %12.0f %s" % (case, run(case, warmup, n, cpu), unit))
    sockets, children = leftovers()
    if sockets or children:
        print("left behind: %d sockets, %d children" % (sockets, children))


if __name__ == "__main__":
    main(sys.argv[1:])
