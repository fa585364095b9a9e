#!/usr/bin/env python3
"""A replica for `leaderrun --hot-standby`: it starts as a standby, warms up once, and is told
each role change without a restart.

It reads its role from LEADERRUN_ROLE at start, then from the file LEADERRUN_ROLE_FILE (KEY=value
lines: ROLE, and for a leader REVISION, the fencing token) each time the role signal comes
(SIGURG unless leaderrun was given --role-signal; REPLICA_SIGNAL names another). When told it is
a standby again, it stops acting as leader first, then confirms with the datagram ROLE=standby on
LEADERRUN_NOTIFY_SOCKET: leaderrun releases leadership only after that (or after it stopped a
child that did not confirm in time).

    leaderrun --election db --hot-standby -- python3 examples/hot-standby/replica.py

With REPLICA_JOURNAL set, each role it takes is appended there as `<monotonic ns> <pid> <role>
[<revision>]` (the tests read it). REPLICA_NO_CONFIRM=1 makes it a replica that never confirms.
"""
import os
import signal
import socket
import sys
import time

def read_role(path):
    fields = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                fields[key] = value.strip("'")
    except OSError:
        return None, None
    return fields.get("ROLE"), fields.get("REVISION")


def record(role, revision=None):
    journal = os.environ.get("REPLICA_JOURNAL")
    line = f"{time.monotonic_ns()} {os.getpid()} {role}" + (f" {revision}" if revision else "")
    print(f"replica: {role}" + (f" (fencing token {revision})" if revision else ""), flush=True)
    if journal:
        with open(journal, "a") as f:
            f.write(line + "\n")


def confirm_standby():
    if os.environ.get("REPLICA_NO_CONFIRM") == "1":
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"ROLE=standby\n", os.environ["LEADERRUN_NOTIFY_SOCKET"])


def main():
    sig = getattr(signal, "SIG" + os.environ.get("REPLICA_SIGNAL", "URG"))
    # Blocked and waited for: no signal is lost between a check and the wait.
    signal.pthread_sigmask(signal.SIG_BLOCK, {sig, signal.SIGTERM})
    role = os.environ.get("LEADERRUN_ROLE", "standby")
    # The warm-up a cold start would pay at every failover (a cache, a JVM, a replica's catch-up).
    time.sleep(float(os.environ.get("REPLICA_WARMUP", "0")))
    record(role)
    # The file may have changed during the warm-up: read it once before the first wait.
    first = True
    while True:
        if not first and signal.sigwaitinfo({sig, signal.SIGTERM}).si_signo == signal.SIGTERM:
            sys.exit(0)
        first = False
        new, revision = read_role(os.environ["LEADERRUN_ROLE_FILE"])
        if new is None or new == role:
            continue
        role = new
        # Stop acting as leader before saying so.
        record(role, revision if role == "leader" else None)
        if role == "standby":
            confirm_standby()


if __name__ == "__main__":
    main()
