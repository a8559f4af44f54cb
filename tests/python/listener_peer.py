"""The Python side of tests/listener_python.rs: stock CPython `multiprocessing.connection`
`Listener` and `Client` against multiproc's, one command per stdin line, so each interpreter
starts once per test run. Runs on CPython 3.8+.

    python -u listener_peer.py

Commands (space-separated tokens):

    client ADDR KEY TAG          Client(ADDR, authkey=KEY); send b"py:" + TAG; expect b"rs:" + TAG
    listen ADDR KEY              Listener(ADDR, authkey=KEY); print "listening ADDR"; accept one
                                 client; answer its message M with b"py:" + M; wait for its EOF
    pickle ADDR KEY PART [ARG]   Client(ADDR, authkey=KEY), then one pickle exchange (see PARTS)
    echo ADDR KEY                Client of echo_server --codec pickle: every CASE comes back equal
    quit

ADDR: "/path" (Unix), "@name" (abstract), "host:port" or "[::1]:port" (TCP; port 0 for a
listener picks one). KEY: "-" is authkey=None, otherwise "x" and the key in hex ("x" alone is
b"").

Each command prints exactly one result line (a `listen` prints "listening ADDR" first):

    ok TRACE          it worked; TRACE is the handshake as this side saw it (see `describe`)
    auth MESSAGE      multiprocessing.AuthenticationError
    error TYPE MSG    any other exception
    fail WHY          it ran, but something came back different

Python's Listener takes family="AF_INET6", but its Client cannot reach an IPv6 address
(`SocketClient` makes the socket from `address_type`, which says AF_INET for any tuple), so
for "[::1]:port" `connect` runs Client's own body over an AF_INET6 socket: the stock
`answer_challenge` then `deliver_challenge`.
"""

import datetime
import math
import os
import pickle
import signal
import socket
import sys
import traceback

import multiprocessing.connection as mc
from multiprocessing import AuthenticationError

# A stuck command (a peer that never connects) ends this process instead of leaving it behind.
COMMAND_ALARM = 60

# ---------------------------------------------------------------------------------------------
# The handshake trace: every frame the stock handshake functions send or receive.

TRACE = []


def kind(body):
    """'md5' for the legacy forms (a 20-byte challenge or a 16-byte answer, as CPython 3.12's
    `_get_digest_name_and_payload` decides: by length first), else the `{digest}` name."""
    if len(body) in (16, 20):
        return "md5"
    if body.startswith(b"{") and b"}" in body[:20]:
        return body[1:body.index(b"}")].decode("ascii", "replace")
    return "len%d" % len(body)


def describe(frame):
    if frame.startswith(b"#CHALLENGE#"):
        return "CH:" + kind(frame[len(b"#CHALLENGE#"):])
    if frame == b"#WELCOME#":
        return "W"
    if frame == b"#FAILURE#":
        return "F"
    return "AN:" + kind(frame)


class Tap(object):
    """A Connection that records each handshake frame; everything else passes through."""

    def __init__(self, conn):
        self._conn = conn

    def recv_bytes(self, *args):
        frame = self._conn.recv_bytes(*args)
        TRACE.append("r" + describe(frame))
        return frame

    def send_bytes(self, buf, *args):
        TRACE.append("s" + describe(bytes(buf)))
        return self._conn.send_bytes(buf, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def traced(handshake):
    def run(conn, *args, **kwargs):
        return handshake(Tap(conn), *args, **kwargs)
    return run


# Listener.accept and Client look these up in the module at call time.
mc.answer_challenge = traced(mc.answer_challenge)
mc.deliver_challenge = traced(mc.deliver_challenge)

# ---------------------------------------------------------------------------------------------
# Addresses and keys


def parse_address(token):
    """(address, family) as Listener and Client take them."""
    if token.startswith("@"):
        return "\0" + token[1:], "AF_UNIX"
    if token.startswith("/"):
        return token, "AF_UNIX"
    host, port = token.rsplit(":", 1)
    if host.startswith("["):
        return (host[1:-1], int(port)), "AF_INET6"
    return (host, int(port)), "AF_INET"


def format_address(address, family):
    if family == "AF_UNIX":
        if isinstance(address, bytes):
            address = address.decode("utf-8", "surrogateescape")
        if address.startswith("\0"):
            return "@" + address[1:]
        return address
    if family == "AF_INET6":
        return "[%s]:%d" % (address[0], address[1])
    return "%s:%d" % (address[0], address[1])


def parse_key(token):
    if token == "-":
        return None
    if not token.startswith("x"):
        raise ValueError("bad key token %r" % token)
    return bytes.fromhex(token[1:])


def connect(address, family, authkey):
    if family != "AF_INET6":
        return mc.Client(address, family=family, authkey=authkey)
    # Client's body (see the module docstring) with the socket IPv6 needs.
    with socket.socket(socket.AF_INET6) as s:
        s.setblocking(True)
        s.connect(address)
        c = mc.Connection(s.detach())
    if authkey is not None:
        mc.answer_challenge(c, authkey)
        mc.deliver_challenge(c, authkey)
    return c


def out(line):
    sys.stdout.write(line.replace("\n", " ") + "\n")
    sys.stdout.flush()


def trace():
    return ",".join(TRACE) or "none"


# ---------------------------------------------------------------------------------------------
# Values: what is sent, and exact comparison


def same(a, b):
    """Equal and of the same types all the way down (1, 1.0 and True are all different
    here; -0.0 is not 0.0; nan is nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        if sorted(map(repr, a)) != sorted(map(repr, b)):
            return False
        return all(same(a[k], b[k]) for k in a)
    if isinstance(a, (set, frozenset)):
        return a == b and sorted(map(repr, a)) == sorted(map(repr, b))
    return a == b


TEXT = "shared " * 3
SHARED = [1, TEXT]

# One list (or dict) in several places, holding a memoized object: plain data that the
# Rust side should echo too (`shared_containers_decode` in tests/listener_python.rs).
SHARED_CASES = [
    ("shared_list", [SHARED, SHARED]),
    ("shared_in_dict", {"a": SHARED, "b": SHARED}),
]

# Sent by Python with conn.send, echoed back by the Rust side (pickle::loads then dumps); the
# Rust side checks what it decoded against its own table in the same order
# (`dynamic_cases` in tests/listener_python.rs).
CASES = [
    ("none", None),
    ("true", True),
    ("false", False),
    ("zero", 0),
    ("small", 42),
    ("negative", -7),
    ("i32_edge", 2**31),
    ("i64_max", 2**63 - 1),
    ("i64_min", -2**63),
    ("u64_max", 2**64 - 1),
    ("big", 2**100),
    ("big_negative", -(2**100) - 1),
    ("huge", 7**200),
    ("float", 1.5),
    ("negative_zero", -0.0),
    ("infinity", float("inf")),
    ("nan", float("nan")),
    ("subnormal", 5e-324),
    ("str", u"h\u00e9llo \u2713 \U0001F600"),
    ("empty_str", ""),
    ("bytes", bytes(range(256))),
    ("empty_bytes", b""),
    ("list", [1, "two", 3.0, None]),
    ("empty_list", []),
    ("tuple", (1, "two")),
    ("one_tuple", (1,)),
    ("empty_tuple", ()),
    ("dict", {"a": 1, "b": [2, 3]}),
    ("dict_int_keys", {1: "one", -2: "minus two"}),
    ("dict_tuple_key", {(1, 2): "pair"}),
    ("empty_dict", {}),
    ("set", {1, 2, 3}),
    ("empty_set", set()),
    ("frozenset", frozenset({"x", "y"})),
    ("empty_frozenset", frozenset()),
    ("nested", {"k": [(1, 2), {3}], 2: frozenset({b"x"}), "big": [2**100, -(2**70)]}),
    ("shared_str", [TEXT, TEXT]),
    ("long_list", list(range(1000))),
]

# Built by the Rust side as multiproc::pickle::Value, dumped and sent with send_bytes; read
# here with conn.recv() (`from_rust_cases` in tests/listener_python.rs).
FROM_RUST = [
    ("none", None),
    ("bools", [True, False]),
    ("ints", [0, -1, 2**63 - 1, -2**63]),
    ("float", -2.5),
    ("str", u"\u00fcnic\u00f6de \u2713"),
    ("bytes", b"\x00\x01\xfe\xff"),
    ("tuple", (1, "a", None)),
    ("empty_tuple", ()),
    ("list_of_tuples", [(1, 2), (3,)]),
    ("dict", {"k": 1, 2: "v", (1, 2): [3]}),
    ("set", {1, 2, 3}),
    ("frozenset", frozenset({"a", "b"})),
    ("set_of_tuples", {(1, 2), (3, 4)}),
    ("big_from_python", 2**100),
]

# Python sends TYPED_IN with conn.send; Rust receives it as its `Sample` struct with
# Encoding::Pickle, sends the struct back with send(), and Python must see TYPED_BACK: serde
# writes any sequence (a Vec, a BTreeSet) as a list, a Rust tuple as a tuple.
TYPED_IN = {
    "nothing": None,
    "something": 5,
    "yes": True,
    "no": False,
    "small": 42,
    "negative": -7,
    "max": 2**63 - 1,
    "min": -2**63,
    "float": 2.5,
    "text": u"h\u00e9llo \u2713",
    "raw": b"\x00\x01\xff",
    "list": [1, 2, 3],
    "list_from_tuple": (4, 5),
    "pair": (7, "seven"),
    "map": {"pi": 3.25, "e": 2.75},
    "set": {3, 1, 2},
    "frozen": frozenset({"b", "a"}),
    "nested": [[1], [], [2, 3]],
    "unit": None,
}
TYPED_BACK = dict(TYPED_IN)
TYPED_BACK.update({"list_from_tuple": [4, 5], "set": [1, 2, 3], "frozen": ["a", "b"]})


class Point(object):
    def __init__(self, x, y):
        self.x = x
        self.y = y


class RunsCommand(object):
    """Unpickling this runs os.system(command) (pickled as STACK_GLOBAL posix.system, REDUCE)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def helper():
    return 1


def protocol0_system(command):
    """A hand-written protocol-0 pickle that calls os.system(command) when loaded."""
    return b"cos\nsystem\n(S'" + command.encode() + b"'\ntR."


def rejects(marker):
    """(name, send) pairs: pickles the Rust side must refuse. Unpickling the two command ones
    with Python's pickle would create `marker`."""
    touch = "touch " + marker
    return [
        ("instance", lambda c: c.send(Point(1, 2))),
        ("builtin_function", lambda c: c.send(len)),
        ("function", lambda c: c.send(helper)),
        ("class", lambda c: c.send(Point)),
        ("datetime", lambda c: c.send(datetime.datetime(2020, 1, 2, 3, 4, 5))),
        ("reduce_os_system", lambda c: c.send(RunsCommand(touch))),
        ("protocol0_os_system", lambda c: c.send_bytes(protocol0_system(touch))),
        ("recursive_list", lambda c: c.send(recursive_list())),
    ]


def recursive_list():
    items = []
    items.append(items)
    return items


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_client(args):
    address, family = parse_address(args[0])
    c = connect(address, family, parse_key(args[1]))
    tag = args[2].encode()
    c.send_bytes(b"py:" + tag)
    reply = c.recv_bytes()
    c.close()
    if reply != b"rs:" + tag:
        return "fail unexpected %r" % reply[:11]
    return "ok " + trace()


def cmd_listen(args):
    address, family = parse_address(args[0])
    listener = mc.Listener(address, family=family, authkey=parse_key(args[1]))
    try:
        out("listening " + format_address(listener.address, family))
        c = listener.accept()
        message = c.recv_bytes()
        c.send_bytes(b"py:" + message)
        try:
            extra = c.recv_bytes()
            return "fail more than one message: %r" % extra[:20]
        except EOFError:
            pass
        c.close()
        return "ok " + trace()
    finally:
        listener.close()


def part_dynamic(c, arg):
    bad = []
    for name, obj in (SHARED_CASES if arg == "shared" else CASES):
        c.send(obj)
        back = c.recv()
        if not same(obj, back):
            bad.append("%s: sent %r got %r" % (name, obj, back))
    c.send_bytes(b"done")
    return bad


def part_from_rust(c, arg):
    bad = []
    for name, want in FROM_RUST:
        got = c.recv()
        if not same(want, got):
            bad.append("%s: want %r got %r" % (name, want, got))
    return bad


def part_typed(c, arg):
    bad = []
    c.send(TYPED_IN)
    back = c.recv()
    if not same(TYPED_BACK, back):
        bad.append("struct came back as %r" % (back,))
    # Integers the typed path cannot take (see typed_pickle_limits_are_decode_errors).
    for value in (2**100, 2**64 - 1, -1, 300):
        c.send(value)
        c.send("after")
    got = c.recv()
    if not same(got, 2**64 - 1):
        bad.append("u64::MAX came back as %r" % (got,))
    return bad


def part_reject(c, marker):
    # The payloads are live: Python's own pickle would run the command.
    probe = marker + ".probe"
    pickle.loads(protocol0_system("touch " + probe))
    pickle.loads(pickle.dumps(RunsCommand("touch " + probe + "2")))
    if not (os.path.exists(probe) and os.path.exists(probe + "2")):
        return ["the os.system payloads do not run under Python's pickle"]
    os.unlink(probe)
    os.unlink(probe + "2")
    for i, (name, send) in enumerate(rejects(marker)):
        send(c)       # for the typed recv
        c.send(i)     # the connection still works
        send(c)       # for pickle::loads on recv_bytes
        c.send(i)
    done = c.recv()
    return [] if done == "done" else ["expected 'done', got %r" % (done,)]


PARTS = {
    "dynamic": part_dynamic,
    "from_rust": part_from_rust,
    "typed": part_typed,
    "reject": part_reject,
}


def cmd_pickle(args):
    address, family = parse_address(args[0])
    c = connect(address, family, parse_key(args[1]))
    bad = PARTS[args[2]](c, args[3] if len(args) > 3 else None)
    c.close()
    return "fail " + " | ".join(bad) if bad else "ok " + trace()


def cmd_echo(args):
    address, family = parse_address(args[0])
    c = connect(address, family, parse_key(args[1]))
    bad = []
    for name, obj in CASES:
        c.send(obj)
        back = c.recv()
        if not same(obj, back):
            bad.append("%s: sent %r got %r" % (name, obj, back))
    c.close()
    return "fail " + " | ".join(bad) if bad else "ok %d" % len(CASES)


COMMANDS = {
    "client": cmd_client,
    "listen": cmd_listen,
    "pickle": cmd_pickle,
    "echo": cmd_echo,
}


def main():
    out("ready %d.%d" % sys.version_info[:2])
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        del TRACE[:]
        signal.alarm(COMMAND_ALARM)
        try:
            result = COMMANDS[words[0]](words[1:])
        except AuthenticationError as e:
            result = "auth %s" % e
        except (EOFError, AssertionError) as e:
            # What the tests provoke on purpose (a peer that hangs up; 3.11 and older
            # checking a challenge with `assert`): the result line says it all.
            result = "error %s %s" % (type(e).__name__, e)
        except Exception as e:
            traceback.print_exc()
            result = "error %s %s" % (type(e).__name__, e)
        signal.alarm(0)
        out(result)


if __name__ == "__main__":
    main()
