#!/usr/bin/env python3
# The lab's stand-in for IPVS (issue 13; README.md, "The lab"): a transparent TCP proxy run in a
# lab node's network namespace,
#   ip netns exec <node-netns> python3 src/lab/ipvs-proxy.py --map VIP:PORT=BACKEND:PORT ...
# It reproduces the netfilter path of a pod's connection under kube-proxy's IPVS mode, which
# this kernel cannot run (no ip_vs):
# - it listens on each Service VIP (an address of the node's kube-ipvs0, so the client pod's SYN
#   to it crosses the node's INPUT with the VIP as destination, as IPVS's does before it is
#   rewritten in LOCAL_IN);
# - for each connection it opens one to the backend with the client pod's address as source
#   (IP_TRANSPARENT: a socket may use an address that is not the node's), so that SYN crosses
#   the node's OUTPUT with source = client pod and destination = backend, and then the backend
#   node's FORWARD, as IPVS's rewritten packet does;
# - the backend's replies, addressed to the client pod, are marked by `-m socket --transparent`
#   in mangle PREROUTING and routed to this process by a policy route (fwmark -> local table),
#   set up by src/lab/lab.ts.
# What it cannot reproduce: IPVS itself (its scheduler, its connection table, its conntrack
# handling); the client's handshake completes with this process before the backend is tried
# (IPVS forwards the SYN), so a connection counts as through only when the backend's greeting
# reaches the client; the source port to the backend is a new one (IPVS keeps the client's;
# policies never match source ports). TCP only.
# Python standard library only: IP_TRANSPARENT needs setsockopt, which Node lacks. Prints
# "ready" on stdout once every VIP is bound; runs until SIGTERM.

import socket
import sys
import threading

IP_TRANSPARENT = getattr(socket, 'IP_TRANSPARENT', 19)
CONNECT_TIMEOUT_S = 3.0


def parse(argv):
    maps = []
    i = 0
    while i < len(argv):
        if argv[i] != '--map' or i + 1 >= len(argv):
            raise SystemExit(f'usage: ipvs-proxy.py --map VIP:PORT=BACKEND:PORT ... (got {argv[i]!r})')
        front, back = argv[i + 1].split('=')
        vip, vport = front.rsplit(':', 1)
        bip, bport = back.rsplit(':', 1)
        maps.append(((vip, int(vport)), (bip, int(bport))))
        i += 2
    return maps


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def relay(client, peer, backend):
    out = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        out.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        out.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        out.bind((peer[0], 0))
        out.settimeout(CONNECT_TIMEOUT_S)
        out.connect(backend)
        out.settimeout(None)
    except OSError as e:
        print(f'{peer[0]}:{peer[1]} -> {backend[0]}:{backend[1]}: {e}', file=sys.stderr, flush=True)
        out.close()
        client.close()
        return
    t = threading.Thread(target=pump, args=(out, client), daemon=True)
    t.start()
    pump(client, out)
    t.join()
    out.close()
    client.close()


def serve(listener, backend):
    while True:
        client, peer = listener.accept()
        threading.Thread(target=relay, args=(client, peer, backend), daemon=True).start()


def main():
    maps = parse(sys.argv[1:])
    threads = []
    for front, backend in maps:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(front)
        s.listen(256)
        threads.append(threading.Thread(target=serve, args=(s, backend), daemon=True))
    for t in threads:
        t.start()
    print('ready', flush=True)
    sys.stdout.close()
    threading.Event().wait()


if __name__ == '__main__':
    main()
