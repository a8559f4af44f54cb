"""CPython's side of benches/connection.rs: the same exchanges with multiprocessing.Pipe.

Every case runs in two processes, a parent that measures and a child started with the fork
start method, over stock multiprocessing.connection.Connection objects:

  rtt_64            64-byte send_bytes/recv_bytes round trips, both processes pinned to one CPU
  rtt_64_unpinned   the same, unpinned
  oneway_64         the child send_bytes 64-byte messages, the parent recv_bytes them
  oneway_64k        the same with 64 KiB messages, over Pipe() (a socketpair)
  oneway_64k_half   the same over Pipe(duplex=False) (an os.pipe)
  oneway_obj        the child conn.send()s {'id': i, 'v': i * 0.1, 's': 'abc'}, the parent recv()s

rtt results are microseconds per round trip; oneway results are messages per second, timed
by the receiving parent from its "go" on a separate control Pipe to the last message.

Two ways to run it:

  python3 benches/python/connection.py [CASE...]   run cases standalone and print the results
  python3 benches/python/connection.py --serve     the bench's driver: reads lines
      "CASE WARMUP N CPU" on stdin (CPU -1: unpinned) and answers one line per request,
      the figure, so the Rust bench can interleave Python with its own runs.
"""

import multiprocessing
import os
import sys
import time

CTX = multiprocessing.get_context("fork")
PAYLOAD_64 = b"x" * 64
PAYLOAD_64K = b"x" * (64 * 1024)


# Bound methods are looked up once, outside the loops: the usual CPython idiom for a hot loop,
# so that the figures are CPython's I/O path rather than attribute lookups.


def _echo(conn, total):
    send, recv = conn.send_bytes, conn.recv_bytes
    for _ in range(total):
        send(recv())


def rtt(warmup, n, cpu):
    """Microseconds per 64-byte round trip."""
    parent, child = CTX.Pipe()
    saved = os.sched_getaffinity(0)
    if cpu >= 0:
        # The forked child inherits the mask, so both ends share the CPU.
        os.sched_setaffinity(0, {cpu})
    try:
        proc = CTX.Process(target=_echo, args=(child, warmup + n))
        proc.start()
        child.close()
        payload = PAYLOAD_64
        send, recv = parent.send_bytes, parent.recv_bytes
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
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError("echo child exited with %r" % proc.exitcode)
    return elapsed / n * 1e6


def _send_bytes_rounds(conn, ctl, payload, counts):
    send = conn.send_bytes
    for count in counts:
        ctl.recv_bytes()
        for _ in range(count):
            send(payload)


def _send_obj_rounds(conn, ctl, counts):
    obj = {"id": 0, "v": 0.0, "s": "abc"}
    send = conn.send
    for count in counts:
        ctl.recv_bytes()
        for i in range(count):
            obj["id"] = i
            obj["v"] = i * 0.1
            send(obj)


def oneway(case, warmup, n):
    """Messages per second received by the parent."""
    if case == "oneway_64k_half":
        receiver, sender = CTX.Pipe(duplex=False)
    else:
        receiver, sender = CTX.Pipe()
    ctl, ctl_child = CTX.Pipe()
    counts = (warmup, n)
    if case == "oneway_obj":
        proc = CTX.Process(target=_send_obj_rounds, args=(sender, ctl_child, counts))
    else:
        payload = PAYLOAD_64 if case == "oneway_64" else PAYLOAD_64K
        proc = CTX.Process(
            target=_send_bytes_rounds, args=(sender, ctl_child, payload, counts)
        )
    proc.start()
    sender.close()
    ctl_child.close()
    obj = case == "oneway_obj"
    recv = receiver.recv if obj else receiver.recv_bytes
    for count in counts:
        start = time.perf_counter()
        ctl.send_bytes(b"g")
        for _ in range(count):
            got = recv()
        elapsed = time.perf_counter() - start
    if obj:
        if got != {"id": n - 1, "v": (n - 1) * 0.1, "s": "abc"}:
            raise RuntimeError("last object was %r" % (got,))
    elif len(got) != len(payload):
        raise RuntimeError("last message had %d bytes" % len(got))
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError("sender child exited with %r" % proc.exitcode)
    return n / elapsed


def run(case, warmup, n, cpu):
    if case in ("rtt_64", "rtt_64_unpinned"):
        return rtt(warmup, n, cpu if case == "rtt_64" else -1)
    if case in ("oneway_64", "oneway_64k", "oneway_64k_half", "oneway_obj"):
        return oneway(case, warmup, n)
    raise ValueError("unknown case %r" % case)


# Standalone defaults: (warmup, n) per case.
DEFAULTS = {
    "rtt_64": (2000, 20000),
    "rtt_64_unpinned": (2000, 20000),
    "oneway_64": (20000, 200000),
    "oneway_64k": (2000, 20000),
    "oneway_64k_half": (2000, 20000),
    "oneway_obj": (20000, 200000),
}


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


def main(argv):
    if argv[:1] == ["--serve"]:
        serve()
        return
    cases = argv or list(DEFAULTS)
    cpu = min(os.sched_getaffinity(0))
    print("CPython", sys.version.split()[0])
    for case in cases:
        warmup, n = DEFAULTS[case]
        value = run(case, warmup, n, cpu)
        unit = "us" if case.startswith("rtt") else "msg/s"
        print("%-18s %12.3f %s" % (case, value, unit))


if __name__ == "__main__":
    main(sys.argv[1:])
