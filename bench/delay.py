"""A delay line for bench/wan, where the kernel has no netem qdisc: every IP packet routed into
the TUN device NAME is written back into it DELAY_MS later, in order, and the kernel routes it
on from there. Nothing is dropped, reordered or rate limited.

    python3 bench/delay.py NAME DELAY_MS

The device must exist (`ip tuntap add dev NAME mode tun`); it has carrier while this runs.
"""

import collections
import fcntl
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def attach(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def serve(fd, delay):
    line = collections.deque()  # (when to send, packet), in arrival order
    while True:
        timeout = max(0.0, line[0][0] - time.monotonic()) if line else None
        readable, _, _ = select.select([fd], [], [], timeout)
        if readable:
            due = time.monotonic() + delay
            while True:
                try:
                    line.append((due, os.read(fd, 65536)))
                except BlockingIOError:
                    break
        now = time.monotonic()
        while line and line[0][0] <= now:
            os.write(fd, line.popleft()[1])


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    name, delay_ms = sys.argv[1], float(sys.argv[2])
    fd = attach(name)
    print(f"delaying what is routed into {name} by {delay_ms} ms", flush=True)
    serve(fd, delay_ms / 1000)


if __name__ == "__main__":
    main()
