#!/usr/bin/env python3
# The agent's drop-log reader (issue 11): binds an nfnetlink_log group, reads the packets our
# log rules send it (src/compiler/drop-log.ts writes the prefixes, src/sync/render.ts the rules)
# and prints one JSON line per packet on stdout for the agent (src/agent/drop-log.ts):
#
#   {"prefix": "PCTL I np abc...", "src": "10.244.1.2", "dst": "10.244.2.3", "protocol": "tcp",
#    "sport": 40000, "dport": 80}
#
# Why a process of its own: Node has no AF_NETLINK sockets, and no maintained npm library reads
# nfnetlink_log without a native build; Python's socket module speaks netlink. The agent starts
# it in its own network namespace and restarts it if it ends. On a bind error (the group bound by
# another listener) it prints one {"error": ...} line and exits 1. Lines with "lost" say the
# kernel dropped log records the reader did not read in time (ENOBUFS). It exits when its parent
# (the agent) is gone, so a killed agent's reader does not keep the group from the next one.
#
# Usage: nflog-reader.py GROUP [PARENT_PID]
# PARENT_PID: the process whose end ends the reader (default: the parent at start; given, a
# parent gone before the reader got that far is noticed too).

import errno
import json
import os
import signal
import socket
import struct
import sys

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NLMSG_DONE = 3
# Config attributes.
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
# Packet attributes.
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}

# The kernel sends a batch when it holds QTHRESH packets or after TIMEOUT hundredths of a second,
# so a log record reaches the agent within 50 ms, and a flood is read in batches.
QTHRESH = 32
TIMEOUT = 5
COPY_BYTES = 128


def attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def config(sock, group, attrs, seq):
    # nfgenmsg: family AF_INET, version 0, resource id (the group) in network order.
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(group)) + b"".join(attrs)
    msg = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body
    sock.send(msg)
    data = sock.recv(65536)
    length, kind = struct.unpack_from("=IH", data, 0)
    if kind == NLMSG_ERROR:
        (err,) = struct.unpack_from("=i", data, 16)
        if err != 0:
            raise OSError(-err, os.strerror(-err))


def attrs_of(data, off, end):
    out = {}
    while off + 4 <= end:
        n, kind = struct.unpack_from("=HH", data, off)
        if n < 4:
            break
        out[kind & 0x7FFF] = data[off + 4 : off + n]
        off += (n + 3) & ~3
    return out


def packet(a):
    prefix = a.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode("ascii", "replace")
    p = a.get(NFULA_PAYLOAD, b"")
    if len(p) < 20 or p[0] >> 4 != 4:
        return None
    ihl = (p[0] & 15) * 4
    proto = p[9]
    rec = {"prefix": prefix, "src": socket.inet_ntoa(p[12:16]), "dst": socket.inet_ntoa(p[16:20]), "protocol": PROTOCOLS.get(proto, str(proto))}
    frag = struct.unpack_from("!H", p, 6)[0] & 0x1FFF
    if proto in (6, 17, 132) and frag == 0 and len(p) >= ihl + 4:
        rec["sport"], rec["dport"] = struct.unpack_from("!HH", p, ihl)
    return rec


def main():
    args = sys.argv[1:]
    if len(args) not in (1, 2) or not all(a.isdigit() for a in args) or int(args[0]) > 65535:
        print(json.dumps({"error": "usage: nflog-reader.py GROUP (0-65535) [PARENT_PID], got %r" % args}), flush=True)
        return 2
    group = int(args[0])
    parent = int(args[1]) if len(args) == 2 else os.getppid()
    if os.getppid() != parent:
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    try:
        config(sock, group, [attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND))], 1)
        config(sock, group, [attr(NFULA_CFG_MODE, struct.pack("!IBB", COPY_BYTES, NFULNL_COPY_PACKET, 0))], 2)
        config(sock, group, [attr(NFULA_CFG_QTHRESH, struct.pack("!I", QTHRESH)), attr(NFULA_CFG_TIMEOUT, struct.pack("!I", TIMEOUT))], 3)
    except OSError as e:
        hint = " (is another listener bound to it?)" if e.errno in (errno.EPERM, errno.EBUSY) else ""
        print(json.dumps({"error": "nflog group %d: %s%s" % (group, e.strerror or e, hint)}), flush=True)
        return 1
    print(json.dumps({"ready": group}), flush=True)
    out = sys.stdout
    sock.settimeout(1.0)
    while True:
        try:
            data = sock.recv(1 << 18)
        except socket.timeout:
            # Reparented: the agent that started us is gone.
            if os.getppid() != parent:
                return 0
            continue
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                out.write('{"lost": true}\n')
                out.flush()
                continue
            raise
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if length < 16:
                break
            if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
                rec = packet(attrs_of(data, off + 20, off + length))
                if rec:
                    out.write(json.dumps(rec, separators=(",", ":")) + "\n")
            off += (length + 3) & ~3
        out.flush()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, KeyboardInterrupt):
        sys.exit(0)
