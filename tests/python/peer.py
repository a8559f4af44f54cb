"""The Python peer driven by tests/python_interop.rs.

Stock CPython `multiprocessing.connection.Connection` (the C `_multiprocessing.Connection` on
2.7) wrapped around file descriptors inherited from the Rust test, the way
`subprocess.Popen(pass_fds=...)` hands them over. Runs on 2.7 and 3.6+: no f-strings.

    python -u peer.py MODE ARGS...

The peer reports through stdout lines and its exit code (0: the mode ran as intended; 1 and a
traceback on stderr otherwise); the Rust side asserts on both.

Payloads follow one deterministic pattern, shared with the Rust side:
    byte[i] = ((i % 251) * 131 + ((i // 251) % 256) * 7 + seed) % 256
whose period (251 * 256 = 64256 bytes) divides no power of two, so a slice landing at the
wrong offset (off by a header, a read-ahead buffer, ...) does not compare equal.
"""

import errno
import os
import struct
import sys

try:
    from multiprocessing.connection import Connection  # 3.x: the pure-Python class
except ImportError:  # 2.7: the C type, Connection(handle, readable=True, writable=True)
    from _multiprocessing import Connection

PERIOD = 251 * 256


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


_periods = {}


def period(seed):
    """One period of the pattern (see the module docstring)."""
    if seed in _periods:
        return _periods[seed]
    blocks = []
    for k in range(256):
        blocks.append(bytes(bytearray((j * 131 + k * 7 + seed) % 256 for j in range(251))))
    _periods[seed] = b"".join(blocks)
    return _periods[seed]


def pattern(n, seed):
    one = period(seed)
    return (one * (n // PERIOD + 1))[:n]


def write_all(fd, data):
    view = memoryview(data)
    while len(view):
        view = view[os.write(fd, view):]


def conns(read_fd, write_fd):
    """A duplex Connection when both fds are the same, else a reader and a writer."""
    if read_fd == write_fd:
        c = Connection(read_fd)
        return c, c
    return Connection(read_fd, writable=False), Connection(write_fd, readable=False)


def peer_gone(e):
    return getattr(e, "errno", None) in (errno.EPIPE, errno.ECONNRESET)


def mode_caps(args):
    """Which framing this interpreter's recv_bytes understands, read from its own source."""
    out("version %d.%d" % sys.version_info[:2])
    long_recv = 0
    if sys.version_info[0] >= 3:
        import inspect
        src = inspect.getsource(Connection._recv_bytes)
        # 3.8+: `if size == -1: ... struct.unpack("!Q", ...)`.
        long_recv = int("size == -1" in src and "!Q" in src)
    out("long_recv %d" % long_recv)


def mode_echo(args):
    """echo READ_FD WRITE_FD: send back every message until EOFError."""
    rd, wr = conns(int(args[0]), int(args[1]))
    n = 0
    while True:
        try:
            m = rd.recv_bytes()
        except EOFError:
            break
        wr.send_bytes(m)
        n += 1
    out("echoed %d" % n)


def mode_send(args):
    """send FD SEED SIZE...: send pattern messages (seed + index), then exit (close)."""
    c = Connection(int(args[0]), readable=False)
    seed = int(args[1])
    n = 0
    try:
        for i, size in enumerate(args[2:]):
            c.send_bytes(pattern(int(size), seed + i))
            n += 1
    except (IOError, OSError) as e:
        if not peer_gone(e):
            raise
        out("peer gone after %d" % n)
        return
    out("sent %d" % n)


def mode_raw(args):
    """raw FD SEED SPEC...: hand-written frames with os.write, then exit.

    SPEC is `s:N` (4-byte length) or `l:N` (-1 marker, then an 8-byte length) for a pattern
    payload of N bytes (seed + index); `s:N:CUT` / `l:N:CUT` writes only the frame's first
    CUT bytes, header included.
    """
    fd = int(args[0])
    seed = int(args[1])
    for i, spec in enumerate(args[2:]):
        parts = spec.split(":")
        n = int(parts[1])
        if parts[0] == "s":
            header = struct.pack("!i", n)
        else:
            header = struct.pack("!i", -1) + struct.pack("!Q", n)
        frame = header + pattern(n, seed + i)
        if len(parts) > 2:
            frame = frame[:int(parts[2])]
        write_all(fd, frame)
    out("wrote %d" % (len(args) - 2))


def mode_expect_eof(args):
    """expect_eof FD: report each message's length, then the EOFError."""
    c = Connection(int(args[0]), writable=False)
    while True:
        try:
            m = c.recv_bytes()
        except EOFError:
            out("EOFError")
            return
        out("got %d" % len(m))


def mode_recv_max(args):
    """recv_max FD MAXLENGTH: recv_bytes(MAXLENGTH) must refuse the next message."""
    c = Connection(int(args[0]))
    try:
        m = c.recv_bytes(int(args[1]))
    except (IOError, OSError) as e:
        out("refused %s" % e)
        return
    out("got %d" % len(m))
    sys.exit(1)


def mode_listfds(args):
    """listfds: the fds open in this process, with what they point at."""
    names = os.listdir("/proc/self/fd")
    # listdir's own directory fd shows up in the listing and is closed again by now.
    for fd in sorted(int(n) for n in names):
        try:
            os.fstat(fd)
        except OSError:
            continue
        try:
            target = os.readlink("/proc/self/fd/%d" % fd)
        except OSError:
            target = "?"
        out("fd %d %s" % (fd, target))


def big_buffer(n, seed):
    """n pattern bytes in one bytearray, filled in place (no second copy of n bytes)."""
    chunk = period(seed) * 1024
    buf = bytearray(n)
    view = memoryview(buf)
    for off in range(0, n, len(chunk)):
        end = min(off + len(chunk), n)
        view[off:end] = chunk[:end - off]
    return buf


def mode_big(args):
    """big FD N SEED: send an N-byte message, then receive one and check it against it."""
    c = Connection(int(args[0]))
    n = int(args[1])
    seed = int(args[2])
    buf = big_buffer(n, seed)
    c.send_bytes(buf)
    del buf
    out("sent %d" % n)
    got = c.recv_bytes()
    if len(got) != n:
        out("bad length %d" % len(got))
        sys.exit(1)
    chunk = period(seed) * 1024
    view = memoryview(got)
    for off in range(0, n, len(chunk)):
        end = min(off + len(chunk), n)
        if view[off:end] != chunk[:end - off]:
            out("mismatch in [%d, %d)" % (off, end))
            sys.exit(1)
    out("received %d" % n)


MODES = {
    "caps": mode_caps,
    "echo": mode_echo,
    "send": mode_send,
    "raw": mode_raw,
    "expect_eof": mode_expect_eof,
    "recv_max": mode_recv_max,
    "listfds": mode_listfds,
    "big": mode_big,
}

if __name__ == "__main__":
    MODES[sys.argv[1]](sys.argv[2:])
