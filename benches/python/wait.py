"""CPython's side of benches/wait.rs: multiprocessing.connection.wait() over many connections.

Every case uses stock multiprocessing objects (fork start method):

  waitset_N, wait_N   wait() over N Pipe() readers (socketpairs) of which exactly one holds an
                      unread 64-byte message, so it stays ready; microseconds per wait() call.
                      Python has no persistent wait set: both families run the same loop.
  fanin_64            64 child processes each send_bytes K 64-byte messages; the parent loops
  fanin_64_reactor    "for r in wait(readers): r.recv_bytes()" until it has 64 * K; messages per
                      second, timed from the "go" to the last message. (Python has no reactor:
                      the _reactor case runs the same loop.)
  reactor_oneway_64   one child send_bytes K 64-byte messages in a plain loop, the parent
                      recv_bytes them; messages per second.

Two ways to run it:

  python3 benches/python/wait.py [CASE...]   run cases standalone and print the results
  python3 benches/python/wait.py --serve     the bench's driver: reads lines "CASE WARMUP N" on
      stdin and answers one line per request, the figure, so the Rust bench can interleave
      Python with its own runs.
"""

import multiprocessing
import os
import resource
import sys
import time
from multiprocessing.connection import wait

CTX = multiprocessing.get_context("fork")
PAYLOAD_64 = b"x" * 64
FANIN = 64


def raise_nofile():
    """wait_4000 needs 8000 fds and more: raise the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_many(n_objs, warmup, n):
    """Microseconds per wait() over n_objs readers, one of them ready."""
    pairs = [CTX.Pipe() for _ in range(n_objs)]
    try:
        readers = [r for r, _ in pairs]
        ready_one = readers[n_objs // 2]
        pairs[n_objs // 2][1].send_bytes(PAYLOAD_64)
        for _ in range(warmup):
            wait(readers)
        start = time.perf_counter()
        for _ in range(n):
            got = wait(readers)
        elapsed = time.perf_counter() - start
        if got != [ready_one]:
            raise RuntimeError("wait returned %d objects" % len(got))
    finally:
        for r, w in pairs:
            r.close()
            w.close()
    return elapsed / n * 1e6


# Bound methods are looked up once, outside the loops: the usual CPython idiom for a hot loop.


def _send_rounds(conn, ctl, counts):
    send = conn.send_bytes
    payload = PAYLOAD_64
    for count in counts:
        ctl.recv_bytes()
        for _ in range(count):
            send(payload)


def fanin(warmup, k):
    """Messages per second received by one parent from 64 children, through wait()."""
    readers, ctls, procs = [], [], []
    counts = (warmup, k)
    for _ in range(FANIN):
        reader, writer = CTX.Pipe()
        ctl, ctl_child = CTX.Pipe()
        proc = CTX.Process(target=_send_rounds, args=(writer, ctl_child, counts))
        proc.start()
        writer.close()
        ctl_child.close()
        readers.append(reader)
        ctls.append(ctl)
        procs.append(proc)
    for count in counts:
        total = count * FANIN
        got = 0
        start = time.perf_counter()
        for ctl in ctls:
            ctl.send_bytes(b"g")
        while got < total:
            for r in wait(readers):
                try:
                    msg = r.recv_bytes()
                except EOFError:
                    # A child that sent its last message exits: its reader turns ready at
                    # EOF while others still send.
                    readers.remove(r)
                    r.close()
                    continue
                got += 1
        elapsed = time.perf_counter() - start
    if len(msg) != 64:
        raise RuntimeError("last message had %d bytes" % len(msg))
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError("sender child exited with %r" % proc.exitcode)
    for c in readers + ctls:
        c.close()
    return k * FANIN / elapsed


def oneway(warmup, n):
    """Messages per second: a plain send_bytes loop in the child, recv_bytes in the parent."""
    receiver, sender = CTX.Pipe()
    ctl, ctl_child = CTX.Pipe()
    counts = (warmup, n)
    proc = CTX.Process(target=_send_rounds, args=(sender, ctl_child, counts))
    proc.start()
    sender.close()
    ctl_child.close()
    recv = receiver.recv_bytes
    for count in counts:
        start = time.perf_counter()
        ctl.send_bytes(b"g")
        for _ in range(count):
            got = recv()
        elapsed = time.perf_counter() - start
    if len(got) != 64:
        raise RuntimeError("last message had %d bytes" % len(got))
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError("sender child exited with %r" % proc.exitcode)
    receiver.close()
    ctl.close()
    return n / elapsed


def run(case, warmup, n):
    family, _, size = case.rpartition("_")
    if family in ("waitset", "wait"):
        return wait_many(int(size), warmup, n)
    if case in ("fanin_64", "fanin_64_reactor"):
        return fanin(warmup, n)
    if case == "reactor_oneway_64":
        return oneway(warmup, n)
    raise ValueError("unknown case %r" % case)


# Standalone defaults: (warmup, n) per case; fan-in n is per child.
DEFAULTS = {
    "waitset_10": (2000, 20000),
    "waitset_100": (500, 5000),
    "waitset_1000": (50, 500),
    "waitset_4000": (10, 100),
    "wait_10": (2000, 20000),
    "wait_100": (500, 5000),
    "wait_1000": (50, 500),
    "wait_4000": (10, 100),
    "fanin_64": (300, 3000),
    "reactor_oneway_64": (20000, 200000),
}


def serve():
    print("ready", sys.version.split()[0], flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        case, warmup, n = words[0], int(words[1]), int(words[2])
        try:
            print(repr(run(case, warmup, n)), flush=True)
        except Exception as e:  # report to the driver rather than dying silently
            print("error %s: %s" % (type(e).__name__, e), flush=True)


def main(argv):
    raise_nofile()
    if argv[:1] == ["--serve"]:
        serve()
        return
    cases = argv or list(DEFAULTS)
    print("CPython", sys.version.split()[0])
    for case in cases:
        warmup, n = DEFAULTS[case]
        value = run(case, warmup, n)
        unit = "us" if case.startswith("wait") else "msg/s"
        print("%-18s %14.3f %s" % (case, value, unit))


if __name__ == "__main__":
    main(sys.argv[1:])
