"""CPython's side of benches/queue.rs: the same flows through multiprocessing.Queue.

Every case uses a stock multiprocessing.Queue() (unbounded) and processes started with the
fork start method:

  q_1x1_64     1 producer process puts 64-byte bytes objects, 1 consumer process get()s them;
               messages per second
  q_4x4_64     the same with 4 producer and 4 consumer processes
  q_1x1_1m     1 MiB bytes objects, 1 -> 1; MB/s (10^6 bytes of items per second)
  qsize_100k   microseconds per qsize() call with 100 000 64-byte items queued (put by this
               process, which never reads them: its feeder thread blocks on the full pipe,
               the rest wait in its buffer, and qsize() counts them all, as ours does)
  q_idle_16    16 consumer processes blocked in get() on an empty queue, 1 producer process
               putting a 64-byte item, then sleeping 200 us, and again: microseconds of CPU
               the consumers spend per item, all together (each measures its own
               time.process_time() over the round)

Each producer puts its share of the items, then None; a consumer stops at the first None it
gets (a producer's items stay in order, so every item was taken once each consumer has its
None) and reports how many items it took. Each round starts at a barrier: every child says
"ready" on its own control Pipe, the parent starts the clock and says "go" to all, and stops
it when it holds every consumer's count. An untimed warm-up round (which also starts the
feeder threads) precedes the timed one, in the same processes.

Two ways to run it:

  python3 benches/python/queue.py [CASE...]   run cases standalone and print the results
  python3 benches/python/queue.py --serve     the bench's driver: reads lines "CASE WARMUP N"
      on stdin (N items in all, or N qsize() calls) and answers one line per request, the
      figure, so the Rust bench can interleave Python with its own runs.
"""

import os
import sys

# This file is named like the standard `queue` module, which multiprocessing imports: take
# this directory (sys.path[0] when run as a script) off the import path first.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import multiprocessing  # noqa: E402 (after the path fix above)
import time  # noqa: E402

CTX = multiprocessing.get_context("fork")
SMALL = 64
MIB = 1 << 20

CASES = {
    # case: (producers, consumers, item bytes)
    "q_1x1_64": (1, 1, SMALL),
    "q_4x4_64": (4, 4, SMALL),
    "q_1x1_1m": (1, 1, MIB),
}


# Bound methods are looked up once, outside the loops: the usual CPython idiom for a hot loop.


def _producer(queue, ctl, payload, counts):
    put = queue.put
    for count in counts:
        ctl.send_bytes(b"r")
        ctl.recv_bytes()
        for _ in range(count):
            put(payload)
        put(None)
    # Leaving the target joins the feeder thread: every item is in the pipe by then.


def _consumer(queue, ctl, item, counts):
    get = queue.get
    for _ in counts:
        ctl.send_bytes(b"r")
        ctl.recv_bytes()
        got, last = 0, b""
        while True:
            msg = get()
            if msg is None:
                break
            got += 1
            last = msg
        if got and len(last) != item:
            raise RuntimeError("an item had %d bytes" % len(last))
        ctl.send_bytes(str(got).encode())


def _finish(procs, ctls, queue):
    """Joins a run's children (an error if one failed), closes its pipes and its queue."""
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError("queue child exited with %r" % proc.exitcode)
    for ctl in ctls:
        ctl.close()
    queue.close()
    queue.join_thread()


def flow(producers, consumers, item, warmup, n):
    """Seconds of the timed round of `n` items in all (after `warmup`)."""
    queue = CTX.Queue()
    counts = (warmup // producers, n // producers)
    payload = b"x" * item
    procs, put_ctls, get_ctls = [], [], []
    for _ in range(consumers):
        ctl, ctl_child = CTX.Pipe()
        proc = CTX.Process(target=_consumer, args=(queue, ctl_child, item, counts))
        proc.start()
        ctl_child.close()
        procs.append(proc)
        get_ctls.append(ctl)
    for _ in range(producers):
        ctl, ctl_child = CTX.Pipe()
        proc = CTX.Process(target=_producer, args=(queue, ctl_child, payload, counts))
        proc.start()
        ctl_child.close()
        procs.append(proc)
        put_ctls.append(ctl)
    ctls = get_ctls + put_ctls
    for count in counts:
        for ctl in ctls:
            ctl.recv_bytes()
        start = time.perf_counter()
        for ctl in ctls:
            ctl.send_bytes(b"g")
        got = sum(int(ctl.recv_bytes()) for ctl in get_ctls)
        elapsed = time.perf_counter() - start
        if got != count * producers:
            raise RuntimeError("consumers got %d items of %d" % (got, count * producers))
    _finish(procs, ctls, queue)
    return elapsed


IDLE_CONSUMERS = 16
IDLE_GAP = 200e-6


def _idle_producer(queue, ctl, payload, counts, consumers):
    put = queue.put
    for count in counts:
        ctl.send_bytes(b"r")
        ctl.recv_bytes()
        for _ in range(count):
            put(payload)
            time.sleep(IDLE_GAP)
        for _ in range(consumers):
            put(None)


def _idle_consumer(queue, ctl, counts):
    get = queue.get
    for _ in counts:
        ctl.send_bytes(b"r")
        ctl.recv_bytes()
        start = time.process_time()
        got = 0
        while get() is not None:
            got += 1
        ctl.send_bytes(("%d %r" % (got, time.process_time() - start)).encode())


def idle(consumers, warmup, n):
    """Microseconds of the consumers' CPU per item over the timed round of `n` items."""
    queue = CTX.Queue()
    counts = (warmup, n)
    procs, get_ctls = [], []
    for _ in range(consumers):
        ctl, ctl_child = CTX.Pipe()
        proc = CTX.Process(target=_idle_consumer, args=(queue, ctl_child, counts))
        proc.start()
        ctl_child.close()
        procs.append(proc)
        get_ctls.append(ctl)
    put_ctl, ctl_child = CTX.Pipe()
    proc = CTX.Process(
        target=_idle_producer, args=(queue, ctl_child, b"x" * SMALL, counts, consumers)
    )
    proc.start()
    ctl_child.close()
    procs.append(proc)
    ctls = get_ctls + [put_ctl]
    cpu = 0.0
    for count in counts:
        for ctl in ctls:
            ctl.recv_bytes()
        for ctl in ctls:
            ctl.send_bytes(b"g")
        got, cpu = 0, 0.0
        for ctl in get_ctls:
            took, secs = ctl.recv_bytes().split()
            got, cpu = got + int(took), cpu + float(secs)
        if got != count:
            raise RuntimeError("consumers got %d items of %d" % (got, count))
    _finish(procs, ctls, queue)
    return cpu / n * 1e6


# The qsize case's queue, filled once and kept for the driver's life (draining 100 000 items
# through the pipe would take longer than the measurement).
_FILLED = {}


def filled(items):
    queue = _FILLED.get(items)
    if queue is None:
        queue = CTX.Queue()
        payload = b"x" * SMALL
        for _ in range(items):
            queue.put(payload)
        # Its feeder thread stays blocked on the full pipe: do not wait for it at exit.
        queue.cancel_join_thread()
        _FILLED[items] = queue
    return queue


def qsize(items, warmup, n):
    """Microseconds per qsize() call with `items` queued."""
    queue = filled(items)
    size = queue.qsize
    for _ in range(warmup):
        size()
    start = time.perf_counter()
    for _ in range(n):
        size()
    elapsed = time.perf_counter() - start
    if size() != items:
        raise RuntimeError("qsize() said %d, %d were queued" % (size(), items))
    return elapsed / n * 1e6


def run(case, warmup, n):
    if case == "qsize_100k":
        return qsize(100_000, warmup, n)
    if case == "q_idle_16":
        return idle(IDLE_CONSUMERS, warmup, n)
    producers, consumers, item = CASES[case]
    secs = flow(producers, consumers, item, warmup, n)
    rate = (n // producers) * producers / secs
    return rate * item / 1e6 if item == MIB else rate


# Standalone defaults: (warmup, n) per case.
DEFAULTS = {
    "q_1x1_64": (10_000, 100_000),
    "q_4x4_64": (10_000, 100_000),
    "q_1x1_1m": (50, 500),
    "qsize_100k": (10_000, 100_000),
    "q_idle_16": (100, 1_000),
}

UNITS = {
    "q_1x1_64": "msg/s",
    "q_4x4_64": "msg/s",
    "q_1x1_1m": "MB/s",
    "qsize_100k": "us",
    "q_idle_16": "us",
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
    if argv[:1] == ["--serve"]:
        serve()
        return
    cases = argv or list(DEFAULTS)
    print("CPython", sys.version.split()[0])
    for case in cases:
        warmup, n = DEFAULTS[case]
        print("%-12s %14.3f %s" % (case, run(case, warmup, n), UNITS[case]))


if __name__ == "__main__":
    main(sys.argv[1:])
