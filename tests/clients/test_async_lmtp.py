"""End-to-end test of examples/async_lmtp (the tokio LMTP front end) with Python's smtplib.LMTP.

Run by .ci/run after `cargo build --release --examples`:
    python3 tests/clients/test_async_lmtp.py [PATH-TO-async_lmtp]
It starts the front end on a throw-away store with two mailboxes, delivers to it from 8 client threads at once,
follows its JMAP-style push lines, checks one reply per recipient, the refusals (unknown user, oversize message,
overlong line, HELO), stops it with SIGTERM (a clean close), and restarts it to check that everything survived.
"""

import json
import os
import queue
import re
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/examples/async_lmtp"
ALICE, BOB = "alice@example.com", "bob@example.com"
THREADS, PER_THREAD = 8, 25
MAX_MESSAGE_SIZE = 48 << 20


class Server:
    def __init__(self, store):
        self.process = subprocess.Popen(
            [BIN, "--store", store, "--mailbox", ALICE, "--mailbox", BOB],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines = queue.Queue()
        self.pushed = {}  # address -> newest state pushed
        self.changed = threading.Condition()
        address = None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            if line.startswith("lmtp listening on "):
                address = line.rsplit(" ", 1)[1]
            if line == "ready":
                break
        assert address, "the front end did not start"
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self):
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.lines.put(line)
            if line.startswith("push "):
                change = json.loads(line[len("push "):])
                assert change["@type"] == "StateChange", line
                with self.changed:
                    for address, types in change["changed"].items():
                        state = int(types["Email"])
                        assert state > self.pushed.get(address, 0), f"a state went backwards: {line}"
                        self.pushed[address] = state
                    self.changed.notify_all()

    def wait_pushed(self, address, state, timeout=15):
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.pushed.get(address, 0) < state:
                left = deadline - time.monotonic()
                assert left > 0, f"no push of {address} at state {state}: {self.pushed}"
                self.changed.wait(left)
            return self.pushed[address]

    def client(self):
        return smtplib.LMTP(self.host, self.port, timeout=60)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        assert code == 0, f"the front end exited with {code}: {rest}"
        assert "closed cleanly" in rest, rest


def message(subject, size=200):
    body = ("line of text " * 6 + "\r\n") * (size // 80 + 1)
    return f"From: sender@example.org\r\nTo: {ALICE}\r\nSubject: {subject}\r\n\r\n.leading dot\r\n{body}"


def data_replies(client, raw, accepted):
    """DATA, then one reply per accepted recipient (LMTP)."""
    replies = [client.data(raw)]
    replies += [client.getreply() for _ in range(accepted - 1)]
    return replies


def uid_of(reply):
    return int(re.search(rb"UID (\d+)", reply[1]).group(1))


def first_run(store):
    server = Server(store)
    with server.client() as client:
        client.ehlo_or_helo_if_needed()
        assert client.mail("sender@example.org")[0] == 250
        assert client.rcpt(ALICE)[0] == 250
        code, text = client.rcpt("nobody@example.com")
        assert code == 550 and b"5.1.1" in text, (code, text)
        assert client.rcpt(BOB)[0] == 250
        replies = data_replies(client, message("two recipients"), 2)
        assert [r[0] for r in replies] == [250, 250], replies
        assert ALICE.encode() in replies[0][1] and BOB.encode() in replies[1][1], replies
        assert uid_of(replies[0]) == 1, replies
        # HELO is SMTP's; the session goes on.
        assert client.docmd("HELO", "x")[0] == 500
        assert client.noop()[0] == 250
    first = server.wait_pushed(ALICE, 1)

    # Many deliveries at once, each to both mailboxes; each reply names the recipient and a fresh UID.
    uids, errors = {ALICE: set(), BOB: set()}, []

    def deliver(thread):
        try:
            with server.client() as client:
                for i in range(PER_THREAD):
                    client.ehlo_or_helo_if_needed()
                    assert client.mail("sender@example.org")[0] == 250
                    assert client.rcpt(ALICE)[0] == 250 and client.rcpt(BOB)[0] == 250
                    replies = data_replies(client, message(f"t{thread} m{i}"), 2)
                    for address, reply in zip((ALICE, BOB), replies):
                        assert reply[0] == 250 and address.encode() in reply[1], reply
                        uids[address].add(uid_of(reply))
        except Exception as e:  # reported by the main thread
            errors.append(repr(e))

    started = time.monotonic()
    threads = [threading.Thread(target=deliver, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert not errors, errors
    total = THREADS * PER_THREAD
    for address in (ALICE, BOB):
        assert uids[address] == set(range(2, total + 2)), f"{address}: UIDs not dense"
    # The push side saw every change: alice's state moved by one MODSEQ per delivery.
    server.wait_pushed(ALICE, first + total)
    server.wait_pushed(BOB, first + total)
    print(f"{total} two-recipient deliveries from {THREADS} connections in {elapsed:.2f} s")

    # An oversize message: refused per recipient, its bytes read and dropped, the session usable afterwards.
    with server.client() as client:
        client.ehlo_or_helo_if_needed()
        assert client.mail("sender@example.org")[0] == 250
        assert client.rcpt(ALICE)[0] == 250
        big = message("big") + ("x" * 998 + "\r\n") * (MAX_MESSAGE_SIZE // 1000 + 10)
        code, text = client.data(big)
        assert code == 552 and b"5.3.4" in text, (code, text)
        assert client.noop()[0] == 250
    # A command line longer than any command: refused and the connection closed.
    with server.client() as client:
        client.ehlo_or_helo_if_needed()
        code, text = client.docmd("MAIL FROM:<" + "a" * 5000 + "@example.org>")
        assert code == 500 and b"too long" in text, (code, text)
    server.stop()
    return total + 1


def second_run(store, delivered):
    server = Server(store)
    with server.client() as client:
        client.ehlo_or_helo_if_needed()
        assert client.mail("sender@example.org")[0] == 250
        assert client.rcpt(ALICE)[0] == 250
        replies = data_replies(client, message("after restart"), 1)
        assert replies[0][0] == 250 and uid_of(replies[0]) == delivered + 1, replies
    server.stop()


def main():
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        delivered = first_run(store)
        second_run(store, delivered)
    print("async LMTP front end: client tests passed")


if __name__ == "__main__":
    main()
