"""CPython's side of benches/process.rs: starting and joining child processes.

Every case starts a child that does nothing, waits for it to exit, and repeats; the figure is
starts + joins per second:

  fork_join      multiprocessing.get_context("fork").Process(target=noop): start(), join()
  spawn_join     multiprocessing.get_context("spawn").Process(target=noop): start(), join()
                 (a fresh interpreter that imports this module as __mp_main__, then runs noop)
  command_join   subprocess.run(["/bin/true"]): Python's nearest equivalent of a command
                 child (multiprocessing has no start method for another program)

Two ways to run it:

  python3 benches/python/process.py [CASE...]   run cases standalone and print the results
  python3 benches/python/process.py --serve     the bench's driver: reads lines "CASE WARMUP N"
      on stdin and answers one line per request, the figure, so the Rust bench can interleave
      Python with its own runs.
"""

import multiprocessing
import subprocess
import sys
import time

FORK = multiprocessing.get_context("fork")
SPAWN = multiprocessing.get_context("spawn")
TRUE = ["/bin/true"]


def noop():
    pass


def start_join(ctx):
    proc = ctx.Process(target=noop)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError("child exited with %r" % proc.exitcode)


def command():
    subprocess.run(TRUE, check=True)


CASES = {
    "fork_join": lambda: start_join(FORK),
    "spawn_join": lambda: start_join(SPAWN),
    "command_join": command,
}


def run(case, warmup, n):
    """Starts + joins per second: `warmup` untimed rounds, then `n` timed ones."""
    once = CASES[case]
    for _ in range(warmup):
        once()
    start = time.perf_counter()
    for _ in range(n):
        once()
    return n / (time.perf_counter() - start)


# Standalone defaults: (warmup, n) per case.
DEFAULTS = {
    "fork_join": (20, 200),
    "spawn_join": (2, 20),
    "command_join": (20, 200),
}


def stop_resource_tracker():
    """The spawn context starts a resource tracker process on first use; stop and reap it
    rather than leave it to notice our exit."""
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)
    if stop is not None:
        stop()


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
    stop_resource_tracker()


def main(argv):
    if argv[:1] == ["--serve"]:
        serve()
        return
    cases = argv or list(DEFAULTS)
    print("CPython", sys.version.split()[0])
    for case in cases:
        warmup, n = DEFAULTS[case]
        print("%-14s %12.1f starts/s" % (case, run(case, warmup, n)))
    stop_resource_tracker()


if __name__ == "__main__":
    main(sys.argv[1:])
