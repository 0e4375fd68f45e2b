"""End-to-end tests of examples/mailserver with Python's standard clients: imaplib and smtplib.LMTP.

Run by .ci/mailserver, which starts the server and sets:
  MAILSERVER_IMAP / MAILSERVER_LMTP   host:port of the running server
  MAILSERVER_PHASE                    1: the main tests; 2: after a restart, what phase 1 left must still be there
Users (see .ci/mailserver): alice (PLAIN), bob (ARGON2ID), carol (PLAIN, 40000-byte quota).
"""

import imaplib
import os
import re
import smtplib
import socket
import sys
import time
import unittest
import uuid

PHASE = os.environ.get("MAILSERVER_PHASE", "1")
IMAP_HOST, IMAP_PORT = os.environ.get("MAILSERVER_IMAP", "127.0.0.1:1143").rsplit(":", 1)
LMTP_HOST, LMTP_PORT = os.environ.get("MAILSERVER_LMTP", "127.0.0.1:2424").rsplit(":", 1)

ALICE = ("alice@example.com", "alice-secret")
BOB = ("bob@example.com", "bob-secret")
CAROL = ("carol@example.com", "carol-secret")


def message(subject, body="Hello from the tests.\r\n", sender="sender@example.org", to="alice@example.com",
            extra=b""):
    msg_id = f"<{uuid.uuid4()}@tests.example>"
    head = (
        f"From: Test Sender <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: Sun, 22 Nov 2026 12:00:00 +0000\r\nMessage-ID: {msg_id}\r\n"
    ).encode()
    return head + extra + b"\r\n" + body.encode()


def lmtp():
    return smtplib.LMTP(LMTP_HOST, int(LMTP_PORT), timeout=30)


def deliver(recipient, subject, **kw):
    with lmtp() as client:
        refused = client.sendmail("sender@example.org", [recipient], message(subject, to=recipient, **kw))
        assert refused == {}, refused


def imap(user=ALICE):
    client = imaplib.IMAP4(IMAP_HOST, int(IMAP_PORT), timeout=30)
    client.login(*user)
    return client


def ok(result):
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def code(client, name):
    """The value of the last untagged response (or response code) `name`, as text."""
    values = client.untagged_responses.get(name) or []
    return values[-1].decode() if values and values[-1] is not None else None


def uids_in(client, mailbox, criteria="ALL"):
    ok(client.select(quote(mailbox)))
    data = ok(client.uid("SEARCH", criteria))
    return [int(x) for x in data[0].split()]


def quote(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fetch_map(data):
    """Parses imaplib FETCH data into {seq: text} (literals joined)."""
    out = {}
    for part in data:
        if isinstance(part, tuple):
            head = part[0].decode(errors="replace")
            m = re.match(r"(\d+) \(", head)
            if m:
                out[int(m.group(1))] = head + part[1].decode(errors="replace")
            else:
                last = max(out) if out else 0
                out[last] = out.get(last, "") + head + part[1].decode(errors="replace")
        elif part is not None:
            text = part.decode(errors="replace")
            m = re.match(r"(\d+) \(", text)
            if m:
                out[int(m.group(1))] = text
    return out


class Raw:
    """A line-level IMAP connection, for what imaplib has no method for (IDLE, QRESYNC responses)."""

    def __init__(self, user=ALICE):
        self.sock = socket.create_connection((IMAP_HOST, int(IMAP_PORT)), timeout=30)
        self.file = self.sock.makefile("rb")
        self.n = 0
        self.readline()  # greeting
        self.command(f'LOGIN "{user[0]}" "{user[1]}"')

    def readline(self):
        line = self.file.readline()
        if not line:
            raise EOFError("connection closed")
        return line.decode(errors="replace").rstrip("\r\n")

    def send(self, text):
        self.sock.sendall(text.encode() + b"\r\n")

    def command(self, text):
        """Sends a command; returns (untagged lines, tagged line). Literals in responses are read whole."""
        self.n += 1
        tag = f"t{self.n}"
        self.send(f"{tag} {text}")
        lines = []
        while True:
            line = self.readline()
            m = re.search(r"\{(\d+)\}$", line)
            if m:
                line += self.file.read(int(m.group(1))).decode(errors="replace") + self.readline()
            if line.startswith(tag + " "):
                assert line.split()[1] == "OK", (text, line, lines)
                return lines, line
            lines.append(line)

    def close(self):
        try:
            self.command("LOGOUT")
        except (AssertionError, EOFError):
            pass
        self.sock.close()


@unittest.skipUnless(PHASE == "1", "phase 1")
class Delivery(unittest.TestCase):
    def test_lmtp_delivers_and_imap_sees_it(self):
        subject = f"delivered {uuid.uuid4()}"
        deliver("alice@example.com", subject)
        client = imap()
        try:
            ok(client.select("INBOX"))
            data = ok(client.search(None, "SUBJECT", quote(subject)))
            seqs = data[0].split()
            self.assertEqual(len(seqs), 1)
            data = ok(client.fetch(seqs[0], "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY.PEEK[])"))
            text = fetch_map(data)[int(seqs[0])]
            self.assertIn(subject, text)
            self.assertIn('(("Test Sender" NIL "sender" "example.org"))', text)
            self.assertIn("Hello from the tests.", text)
            self.assertNotIn("\\Seen", text.split("ENVELOPE")[0])
        finally:
            client.logout()

    def test_lmtp_one_reply_per_recipient_and_unknown_user(self):
        with lmtp() as client:
            client.ehlo_or_helo_if_needed()
            self.assertEqual(client.mail("sender@example.org")[0], 250)
            self.assertEqual(client.rcpt("alice@example.com")[0], 250)
            code_, text = client.rcpt("nobody@example.com")
            self.assertEqual(code_, 550)
            self.assertIn(b"5.1.1", text)
            self.assertEqual(client.rcpt("bob@example.com")[0], 250)
            code_, text = client.data(message("two recipients"))
            self.assertEqual(code_, 250, text)
            self.assertIn(b"alice@example.com", text)
            code_, text = client.getreply()  # LMTP: a second reply for the second accepted recipient
            self.assertEqual(code_, 250, text)
            self.assertIn(b"bob@example.com", text)
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as refused:
            with lmtp() as client:
                client.sendmail("sender@example.org", ["ghost@example.com"], message("nobody"))
        self.assertEqual(refused.exception.recipients["ghost@example.com"][0], 550)

    def test_quota_refusal(self):
        big = "x" * 998 + "\r\n"
        body = big * 12  # about 12 KB
        refusals = []
        for i in range(6):
            try:
                deliver("carol@example.com", f"filler {i}", body=body)
            except smtplib.SMTPDataError as e:
                refusals.append(e)
                break
            except smtplib.SMTPRecipientsRefused as e:
                refusals.append(e)
                break
        self.assertTrue(refusals, "a 40000-byte quota must refuse the fourth 12 KB message")
        e = refusals[0]
        if isinstance(e, smtplib.SMTPDataError):
            self.assertEqual(e.smtp_code, 552)
            self.assertIn(b"5.2.2", e.smtp_error)
        else:
            code_, text = e.recipients["carol@example.com"]
            self.assertEqual(code_, 552)
            self.assertIn(b"5.2.2", text)


def rss_bytes():
    """The server's resident set size (Linux /proc), or None when its PID is not known."""
    pid = os.environ.get("MAILSERVER_PID")
    if not pid:
        return None
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


class PeakRss:
    """Samples the server's RSS every 5 ms while the block runs; `growth` is the peak above the start."""

    def __enter__(self):
        import threading
        self.start = rss_bytes()
        self.peak = self.start or 0
        self.done = threading.Event()

        def sample():
            while not self.done.wait(0.005):
                self.peak = max(self.peak, rss_bytes() or 0)
        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, rss_bytes() or 0)
        self.growth = self.peak - (self.start or 0)


@unittest.skipUnless(PHASE == "1" and os.environ.get("MAILSERVER_PID"), "phase 1, with the server's PID")
class LmtpMemory(unittest.TestCase):
    """Issue 17's LMTP findings: memory stays bounded whatever one connection sends."""

    def test_one_message_to_many_recipients_in_bounded_memory(self):
        # 4 MiB to 30 recipients: the body is shared and at most 4 deliveries are queued at once (each holds its
        # encoded record until written): about 76 MiB at the peak here. Cloned per recipient and all queued at
        # once it was 248 MiB.
        body = ("y" * 998 + "\r\n") * (4 * 1024 * 1024 // 1000)
        raw = message("many recipients", body=body)
        with PeakRss() as rss, lmtp() as client:
            client.ehlo_or_helo_if_needed()
            self.assertEqual(client.mail("sender@example.org")[0], 250)
            for _ in range(30):
                self.assertEqual(client.rcpt("alice@example.com")[0], 250)
            code_, text = client.data(raw)
            self.assertEqual(code_, 250, text)
            for _ in range(29):
                self.assertEqual(client.getreply()[0], 250)
        after = rss_bytes() - rss.start
        print(f"peak +{rss.growth >> 20} MiB, after +{after >> 20} MiB", file=sys.stderr)
        self.assertLess(rss.growth, 100 << 20, f"RSS grew by {rss.growth >> 20} MiB at the peak")

    def test_an_over_long_line_is_skipped_in_bounded_memory(self):
        with PeakRss() as rss, socket.create_connection((LMTP_HOST, int(LMTP_PORT)), timeout=30) as s:
            f = s.makefile("rb")
            f.readline()
            chunk = b"x" * (1 << 20)
            for _ in range(64):
                s.sendall(chunk)
            s.sendall(b"\r\nLHLO test\r\n")
            self.assertTrue(f.readline().startswith(b"500 5.5.2"))
            self.assertTrue(f.readline().startswith(b"250-"))
        self.assertLess(rss.growth, 16 << 20, f"RSS grew by {rss.growth >> 20} MiB for a 64 MiB line")

    def test_a_declared_size_above_the_mailbox_limit_is_refused_at_rcpt(self):
        with lmtp() as client:
            client.ehlo_or_helo_if_needed()
            self.assertEqual(client.mail("sender@example.org", ["SIZE=36000000"])[0], 250)
            code_, text = client.rcpt("alice@example.com")
            self.assertEqual(code_, 552, text)
            self.assertIn(b"5.3.4", text)
            self.assertIn(b"35000000", text)
            client.rset()
            self.assertEqual(client.mail("sender@example.org", ["SIZE=1000"])[0], 250)
            self.assertEqual(client.rcpt("alice@example.com")[0], 250)


@unittest.skipUnless(PHASE == "1", "phase 1")
class Authentication(unittest.TestCase):
    def test_login_plain_and_argon2(self):
        imap(ALICE).logout()
        client = imaplib.IMAP4(IMAP_HOST, int(IMAP_PORT), timeout=30)
        ok(client.authenticate("PLAIN", lambda _: b"\0bob@example.com\0bob-secret"))
        client.logout()

    def test_refusals(self):
        for user, password in [("alice@example.com", "wrong"), ("nobody@example.com", "x"), ("bob@example.com", "")]:
            client = imaplib.IMAP4(IMAP_HOST, int(IMAP_PORT), timeout=30)
            with self.assertRaises(imaplib.IMAP4.error):
                client.login(user, password)
            client.logout()

    def test_capabilities(self):
        client = imap()
        try:
            caps = client.capabilities
            for cap in ("IMAP4REV1", "IDLE", "UIDPLUS", "MOVE", "CONDSTORE", "QRESYNC", "SPECIAL-USE", "ENABLE"):
                self.assertIn(cap, caps)
        finally:
            client.logout()


@unittest.skipUnless(PHASE == "1", "phase 1")
class Mailboxes(unittest.TestCase):
    def test_list_special_use(self):
        client = imap()
        try:
            data = ok(client.list('""', "*"))
            lines = [d.decode() for d in data]
            self.assertTrue(any(line.endswith('"INBOX"') for line in lines), lines)
            self.assertTrue(any("\\Sent" in line and "Sent Items" in line for line in lines), lines)
            self.assertTrue(any("\\Trash" in line and "Deleted Items" in line for line in lines), lines)
            self.assertTrue(any("\\Junk" in line for line in lines), lines)
            self.assertFalse(any("Recoverable Items" in line for line in lines), lines)
        finally:
            client.logout()

    def test_create_rename_delete_subscribe(self):
        client = imap()
        name = f"Projects-{uuid.uuid4().hex[:8]}"
        try:
            ok(client.create(f"{name}/Alpha"))
            lines = [d.decode() for d in ok(client.list('""', f"{name}*"))]
            self.assertEqual(len(lines), 2, lines)
            self.assertIn("\\HasChildren", lines[0])
            ok(client.rename(f"{name}/Alpha", f"{name}/Beta"))
            lines = [d.decode() for d in ok(client.list('""', f"{name}/%"))]
            self.assertEqual(len(lines), 1, lines)
            self.assertIn(f"{name}/Beta", lines[0])
            ok(client.subscribe(f"{name}/Beta"))
            lsub = [d.decode() for d in ok(client.lsub('""', "*")) if d]
            self.assertTrue(any(f"{name}/Beta" in line for line in lsub), lsub)
            ok(client.unsubscribe(f"{name}/Beta"))
            lsub = [d.decode() for d in ok(client.lsub('""', "*")) if d]
            self.assertFalse(any(f"{name}/Beta" in line for line in lsub), lsub)
            ok(client.delete(f"{name}/Beta"))
            ok(client.delete(name))
            self.assertEqual([d for d in ok(client.list('""', f"{name}*")) if d], [])
            # Non-ASCII names travel in modified UTF-7 ("Entwürfe" is "Entw&APw-rfe").
            utf7 = f"Entw&APw-rfe-{name}"
            ok(client.create(quote(utf7)))
            lines = [d.decode() for d in ok(client.list('""', quote(utf7)))]
            self.assertEqual(len(lines), 1, lines)
            self.assertIn(utf7, lines[0])
            ok(client.delete(quote(utf7)))
            typ, _ = client.delete("INBOX")
            self.assertEqual(typ, "NO")
            typ, _ = client.select(quote("No Such Folder"))
            self.assertEqual(typ, "NO")
        finally:
            client.logout()

    def test_status_and_append(self):
        client = imap()
        try:
            before = ok(client.status("Drafts", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)"))[0].decode()
            messages = int(re.search(r"MESSAGES (\d+)", before).group(1))
            uidnext = int(re.search(r"UIDNEXT (\d+)", before).group(1))
            typ, data = client.append("Drafts", "(\\Draft \\Seen)", None, message("a draft"))
            self.assertEqual(typ, "OK", data)
            m = re.search(r"APPENDUID (\d+) (\d+)", data[0].decode())
            self.assertIsNotNone(m, data)
            self.assertEqual(int(m.group(2)), uidnext)
            after = ok(client.status("Drafts", "(MESSAGES UIDNEXT)"))[0].decode()
            self.assertIn(f"MESSAGES {messages + 1}", after)
            ok(client.select("Drafts"))
            data = ok(client.uid("FETCH", m.group(2), "(FLAGS)"))
            self.assertIn("\\Draft", data[0].decode())
        finally:
            client.logout()


@unittest.skipUnless(PHASE == "1", "phase 1")
class Messages(unittest.TestCase):
    def test_flag_copy_move_expunge(self):
        tag = uuid.uuid4().hex[:10]
        for i in range(3):
            deliver("alice@example.com", f"batch {tag} {i}")
        client = imap()
        try:
            uids = uids_in(client, "INBOX", f'SUBJECT "batch {tag}"')
            self.assertEqual(len(uids), 3)
            first, second, third = uids
            # Flag.
            data = ok(client.uid("STORE", str(first), "+FLAGS", "(\\Flagged $Important)"))
            self.assertIn("\\Flagged", data[0].decode())
            self.assertIn("$Important", data[0].decode())
            self.assertEqual(ok(client.uid("SEARCH", "FLAGGED", "SUBJECT", f'"batch {tag}"'))[0].split(),
                             [str(first).encode()])
            self.assertIn(str(first).encode(), ok(client.uid("SEARCH", "KEYWORD", "$Important"))[0].split())
            data = ok(client.uid("STORE", str(first), "-FLAGS.SILENT", "(\\Flagged)"))
            self.assertEqual(ok(client.uid("SEARCH", "FLAGGED", "SUBJECT", f'"batch {tag}"'))[0].split(), [])
            # Copy keeps the source; COPYUID names the new UIDs.
            typ, data = client.uid("COPY", f"{first}:{second}", "Archive")
            self.assertEqual(typ, "OK", data)
            copyuid = code(client, "COPYUID")
            self.assertIsNotNone(copyuid)
            self.assertEqual(len(uids_in(client, "INBOX", f'SUBJECT "batch {tag}"')), 3)
            self.assertEqual(len(uids_in(client, "Archive", f'SUBJECT "batch {tag}"')), 2)
            # Move removes it from the source.
            ok(client.select("INBOX"))
            ok(client.uid("MOVE", str(third), quote("Junk Email")))
            self.assertEqual(uids_in(client, "INBOX", f'SUBJECT "batch {tag}"'), [first, second])
            self.assertEqual(len(uids_in(client, "Junk Email", f'SUBJECT "batch {tag}"')), 1)
            # Expunge only what is \Deleted; UID EXPUNGE only the named UIDs.
            ok(client.select("INBOX"))
            ok(client.uid("STORE", f"{first},{second}", "+FLAGS.SILENT", "(\\Deleted)"))
            ok(client.uid("EXPUNGE", str(first)))
            self.assertEqual(uids_in(client, "INBOX", f'SUBJECT "batch {tag}"'), [second])
            ok(client.expunge())
            self.assertEqual(uids_in(client, "INBOX", f'SUBJECT "batch {tag}"'), [])
        finally:
            client.logout()
        # Reconnect: the changes are there for a new session.
        client = imap()
        try:
            self.assertEqual(uids_in(client, "INBOX", f'SUBJECT "batch {tag}"'), [])
            self.assertEqual(len(uids_in(client, "Archive", f'SUBJECT "batch {tag}"')), 2)
        finally:
            client.logout()

    def test_search_decodes_encoded_words_and_quoted_printable(self):
        tag = uuid.uuid4().hex[:10]
        # Subject "Grüße {tag}" as an RFC 2047 word; a quoted-printable UTF-8 body with a soft line break.
        deliver("alice@example.com", f"=?UTF-8?Q?Gr=C3=BC=C3=9Fe_{tag}?=",
                body="The smartchoice offer for K=C3=B6ln is v=\r\nalid.\r\n",
                extra=b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                      b"Content-Transfer-Encoding: quoted-printable\r\n")
        deliver("alice@example.com", f"plain {tag}", body=f"nothing for {tag}\r\n")
        client = imap()
        try:
            ok(client.select("INBOX"))
            both = [int(x) for x in ok(client.uid("SEARCH", "TEXT", tag))[0].split()]
            self.assertEqual(len(both), 2)
            uid, plain_uid = both

            def uid_search(*criteria, literal=None):
                client.literal = literal
                return [int(x) for x in ok(client.uid("SEARCH", "CHARSET", "UTF-8", *criteria))[0].split()]

            # Non-ASCII criteria in a literal, case-folded: "GRÜSSE" finds "Grüße".
            self.assertEqual(uid_search("SUBJECT", tag, "SUBJECT", literal="GRÜSSE".encode()), [uid])
            self.assertEqual(uid_search("BODY", literal="KÖLN IS VALID".encode()), [uid])
            self.assertEqual(uid_search("BODY", "smartc", "SUBJECT", tag), [uid])
            self.assertEqual(uid_search("SUBJECT", "=?UTF-8?Q?Gr", "SUBJECT", tag), [])
            self.assertEqual(uid_search("FROM", "example", "BODY", tag), [plain_uid])
            self.assertEqual(uid_search("OR", "BODY", "smartchoice", "SUBJECT", quote(f"plain {tag}")), both)
            self.assertEqual(uid_search("NOT", "BODY", "smartchoice", "TEXT", tag), [plain_uid])
            self.assertEqual(uid_search("HEADER", "Content-Transfer-Encoding", "quoted", "TEXT", tag), [uid])
            self.assertEqual(uid_search("UID", f"{uid}:*", "TEXT", tag), both)
            # A header name the store refuses is a protocol error, not an empty answer.
            with self.assertRaises(imaplib.IMAP4.error):
                client.uid("SEARCH", "HEADER", quote("Bad Name"), "x")
            # By sequence number: SEARCH answers sequence numbers, the same messages.
            seqs = [int(x) for x in ok(client.search(None, "TEXT", tag))[0].split()]
            self.assertEqual(len(seqs), 2)
            self.assertEqual([int(x) for x in ok(client.search(None, f"{seqs[0]}", "TEXT", tag))[0].split()],
                             [seqs[0]])
        finally:
            client.literal = None
            client.logout()

    def test_sort_and_thread(self):
        tag = uuid.uuid4().hex[:10]

        def send(subject, date, sender, msg_id, reply_to=None, size=0):
            raw = (
                f"From: {sender}\r\nTo: alice@example.com\r\nSubject: {subject}\r\nDate: {date}\r\n"
                f"Message-ID: <{msg_id}.{tag}@tests.example>\r\n"
                + (f"In-Reply-To: <{reply_to}.{tag}@tests.example>\r\n" if reply_to else "")
                + f"\r\nsort {tag}\r\n" + "x" * size + "\r\n"
            ).encode()
            with lmtp() as lmtp_client:
                self.assertEqual(lmtp_client.sendmail("sender@example.org", ["alice@example.com"], raw), {})

        send(f"beta {tag}", "Tue, 2 Jan 2024 10:00:00 +0000", "Zed <zed@example.org>", "a", size=300)
        send(f"Re: beta {tag}", "Wed, 3 Jan 2024 10:00:00 +0000", "Amy <amy@example.org>", "b", reply_to="a")
        send(f"alpha {tag}", "Mon, 1 Jan 2024 10:00:00 +0000", "Bob <bob@example.org>", "c", size=100)
        client = imap()
        try:
            a, b, c = uids_in(client, "INBOX", f'BODY "sort {tag}"')
            caps = ok(client.capability())[0].decode()
            for cap in ("SORT", "SORT=DISPLAY", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT"):
                self.assertIn(cap, caps.split())

            def uid_sort(criteria):
                data = ok(client.uid("SORT", criteria, "UTF-8", "BODY", f'"sort {tag}"'))
                return [int(x) for x in data[0].split()]

            self.assertEqual(uid_sort("(DATE)"), [c, a, b])
            self.assertEqual(uid_sort("(REVERSE DATE)"), [b, a, c])
            self.assertEqual(uid_sort("(ARRIVAL)"), [a, b, c])
            # The base subject: "Re: beta" sorts with "beta", ties by arrival.
            self.assertEqual(uid_sort("(SUBJECT)"), [c, a, b])
            self.assertEqual(uid_sort("(FROM)"), [b, c, a])
            self.assertEqual(uid_sort("(DISPLAYFROM)"), [b, c, a])
            self.assertEqual(uid_sort("(REVERSE SIZE)"), [a, c, b])
            self.assertEqual(uid_sort("(SUBJECT REVERSE DATE)"), [c, b, a])
            # By sequence number: the same order, as sequence numbers.
            seqs = {int(u): i + 1 for i, u in enumerate(ok(client.uid("SEARCH", "ALL"))[0].split())}
            data = ok(client.sort("(DATE)", "UTF-8", "BODY", f'"sort {tag}"'))
            self.assertEqual([int(x) for x in data[0].split()], [seqs[c], seqs[a], seqs[b]])

            data = ok(client.uid("THREAD", "REFERENCES", "UTF-8", "BODY", f'"sort {tag}"'))
            self.assertEqual(data[0].decode(), f"({c})({a} {b})")
            data = ok(client.uid("THREAD", "ORDEREDSUBJECT", "UTF-8", "BODY", f'"sort {tag}"'))
            self.assertEqual(data[0].decode(), f"({c})({a} {b})")
            data = ok(client.thread("REFERENCES", "UTF-8", "BODY", f'"sort {tag}"'))
            self.assertEqual(data[0].decode(), f"({seqs[c]})({seqs[a]} {seqs[b]})")
            # Nothing matches: an empty answer.
            self.assertEqual(ok(client.uid("SORT", "(DATE)", "UTF-8", "SUBJECT", f'"none {tag}"')), [b''])
            self.assertEqual(ok(client.uid("THREAD", "REFERENCES", "UTF-8", "SUBJECT", f'"none {tag}"')), [b''])
            # Refusals: an unknown algorithm, an unsupported charset, a bad criterion.
            typ, _ = client.uid("THREAD", "NOSUCH", "UTF-8", "ALL")
            self.assertNotEqual(typ, "OK")
            typ, data = client.uid("SORT", "(DATE)", "KOI8-R", "ALL")
            self.assertEqual(typ, "NO")
            self.assertIn(b"BADCHARSET", data[0])
            with self.assertRaises(imaplib.IMAP4.error):
                client.uid("SORT", "(NOSUCHKEY)", "UTF-8", "ALL")
        finally:
            client.logout()

    def test_envelope_copies_the_date_and_keeps_groups(self):
        tag = uuid.uuid4().hex[:10]
        raw = (
            "From: Test Sender <sender@example.org>\r\n"
            "To: Project Team: alice@example.com, Bob <bob@example.org>;, solo@example.net\r\n"
            "Cc: undisclosed-recipients:;\r\n"
            f"Subject: envelope {tag}\r\n"
            "Date: Mon, 1 Jan 2024 23:30:00 -0500\r\n"
            f"Message-ID: <{tag}@tests.example>\r\n\r\nbody\r\n"
        ).encode()
        with lmtp() as lmtp_client:
            self.assertEqual(lmtp_client.sendmail("sender@example.org", ["alice@example.com"], raw), {})
        client = imap()
        try:
            [uid] = uids_in(client, "INBOX", f'SUBJECT "envelope {tag}"')
            data = ok(client.uid("FETCH", str(uid), "(ENVELOPE)"))
            text = data[0].decode() if isinstance(data[0], bytes) else data[0][0].decode()
            # RFC 3501: the Date as written, not rewritten in UTC.
            self.assertIn(' ENVELOPE ("Mon, 1 Jan 2024 23:30:00 -0500" ', text)
            # A group is a start marker, its members, an end marker; an empty group is the two markers.
            self.assertIn('((NIL NIL "Project Team" NIL)(NIL NIL "alice" "example.com")'
                          '("Bob" NIL "bob" "example.org")(NIL NIL NIL NIL)(NIL NIL "solo" "example.net"))', text)
            self.assertIn('((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))', text)
            # SENTON is the header's own day (2 January in UTC), and TO matches a group's name.
            self.assertEqual(uids_in(client, "INBOX", f'SENTON 1-Jan-2024 SUBJECT "envelope {tag}"'), [uid])
            self.assertEqual(uids_in(client, "INBOX", f'SENTON 2-Jan-2024 SUBJECT "envelope {tag}"'), [])
            self.assertEqual(uids_in(client, "INBOX", f'TO "project team" SUBJECT "envelope {tag}"'), [uid])
        finally:
            client.logout()

    def test_fetch_sections_and_structure(self):
        tag = uuid.uuid4().hex[:10]
        body = (
            "--BOUNDARY\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain part\r\n"
            "--BOUNDARY\r\nContent-Type: application/octet-stream; name=a.bin\r\n"
            "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=a.bin\r\n\r\n"
            "AAECAwQ=\r\n--BOUNDARY--\r\n"
        )
        deliver("alice@example.com", f"mime {tag}", body=body,
                extra=b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BOUNDARY\r\n")
        client = imap()
        try:
            [uid] = uids_in(client, "INBOX", f'SUBJECT "mime {tag}"')
            data = ok(client.uid("FETCH", str(uid), "(BODYSTRUCTURE)"))
            text = data[0].decode() if isinstance(data[0], bytes) else data[0][0].decode()
            self.assertIn('("TEXT" "PLAIN" ("CHARSET" "utf-8")', text)
            self.assertIn('"APPLICATION" "OCTET-STREAM"', text)
            self.assertIn('"MIXED"', text)
            self.assertIn('"ATTACHMENT"', text)
            data = ok(client.uid("FETCH", str(uid), "(BODY.PEEK[1] BODY.PEEK[2]<0.4> BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
            joined = b"".join(p[1] for p in data if isinstance(p, tuple))
            self.assertIn(b"plain part", joined)
            self.assertIn(b"AAEC", joined)
            self.assertIn(f"Subject: mime {tag}".encode(), joined)
            flags = ok(client.uid("FETCH", str(uid), "(FLAGS)"))[0].decode()
            self.assertNotIn("\\Seen", flags)
            ok(client.uid("FETCH", str(uid), "(BODY[TEXT])"))
            flags = ok(client.uid("FETCH", str(uid), "(FLAGS)"))[0].decode()
            self.assertIn("\\Seen", flags)
            self.assertIn(str(uid).encode(), ok(client.uid("SEARCH", "BODY", '"plain part"'))[0].split())
            self.assertIn(str(uid).encode(), ok(client.uid("SEARCH", "FROM", "sender@example.org"))[0].split())
            self.assertIn(str(uid).encode(), ok(client.uid("SEARCH", "SEEN", "LARGER", "100"))[0].split())
            self.assertNotIn(str(uid).encode(), ok(client.uid("SEARCH", "UNSEEN"))[0].split())
        finally:
            client.logout()


@unittest.skipUnless(PHASE == "1", "phase 1")
class Synchronization(unittest.TestCase):
    def test_condstore_qresync_after_another_session(self):
        tag = uuid.uuid4().hex[:10]
        for i in range(4):
            deliver("bob@example.com", f"sync {tag} {i}")
        a = Raw(BOB)
        try:
            a.command("ENABLE QRESYNC")
            lines, _ = a.command("SELECT INBOX")
            validity = int(next(re.search(r"UIDVALIDITY (\d+)", l).group(1) for l in lines if "UIDVALIDITY" in l))
            modseq = int(next(re.search(r"HIGHESTMODSEQ (\d+)", l).group(1) for l in lines if "HIGHESTMODSEQ" in l))
            lines, _ = a.command(f'UID SEARCH SUBJECT "sync {tag}"')
            uids = [int(x) for x in lines[0].split()[2:]]
            self.assertEqual(len(uids), 4)
            known = ",".join(map(str, uids))
        finally:
            a.close()

        # Another session flags one message and expunges another.
        b = imap(BOB)
        try:
            ok(b.select("INBOX"))
            ok(b.uid("STORE", str(uids[0]), "+FLAGS", "(\\Answered)"))
            ok(b.uid("STORE", str(uids[1]), "+FLAGS", "(\\Deleted)"))
            ok(b.uid("EXPUNGE", str(uids[1])))
        finally:
            b.logout()

        # CONDSTORE: FETCH CHANGEDSINCE reports exactly what changed; QRESYNC adds the vanished UID.
        c = Raw(BOB)
        try:
            c.command("ENABLE QRESYNC")
            c.command("SELECT INBOX")
            lines, _ = c.command(f"UID FETCH {known} (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
            vanished = [l for l in lines if l.startswith("* VANISHED (EARLIER)")]
            self.assertEqual(len(vanished), 1, lines)
            self.assertIn(str(uids[1]), vanished[0])
            fetched = [l for l in lines if " FETCH " in l]
            self.assertEqual(len(fetched), 1, lines)
            self.assertIn(f"UID {uids[0]}", fetched[0])
            self.assertIn("\\Answered", fetched[0])
            self.assertIn("MODSEQ", fetched[0])
            c.command("UNSELECT")
            # QRESYNC SELECT: VANISHED (EARLIER) and the changed flags, in the SELECT itself.
            lines, _ = c.command(f"SELECT INBOX (QRESYNC ({validity} {modseq} {known}))")
            self.assertTrue(any(l.startswith("* VANISHED (EARLIER)") and str(uids[1]) in l for l in lines), lines)
            self.assertTrue(any(f"UID {uids[0]}" in l and "\\Answered" in l for l in lines), lines)
            # STORE UNCHANGEDSINCE an older MODSEQ fails for the changed message.
            lines, tagged = c.command(f"UID STORE {uids[0]} (UNCHANGEDSINCE {modseq}) +FLAGS (\\Flagged)")
            self.assertIn("MODIFIED", tagged)
        finally:
            c.close()

    def test_updates_from_other_sessions(self):
        tag = uuid.uuid4().hex[:10]
        deliver("alice@example.com", f"watch {tag} 0")
        a = Raw(ALICE)
        try:
            lines, _ = a.command("SELECT INBOX")
            exists = int(next(l.split()[1] for l in lines if l.endswith(" EXISTS")))
            deliver("alice@example.com", f"watch {tag} 1")
            lines, _ = a.command("NOOP")
            self.assertIn(f"* {exists + 1} EXISTS", lines)
            # Flag changes by another session arrive as FETCH.
            b = imap(ALICE)
            try:
                [uid] = uids_in(b, "INBOX", f'SUBJECT "watch {tag} 1"')
                ok(b.uid("STORE", str(uid), "+FLAGS", "(\\Flagged)"))
            finally:
                b.logout()
            lines, _ = a.command("NOOP")
            self.assertTrue(any("FETCH" in l and "\\Flagged" in l and f"UID {uid}" in l for l in lines), lines)
        finally:
            a.close()

    def test_idle_notification(self):
        tag = uuid.uuid4().hex[:10]
        a = Raw(ALICE)
        try:
            lines, _ = a.command("SELECT INBOX")
            exists = int(next(l.split()[1] for l in lines if l.endswith(" EXISTS")))
            a.send("idle1 IDLE")
            self.assertTrue(a.readline().startswith("+"))
            started = time.monotonic()
            deliver("alice@example.com", f"idle {tag}")
            line = a.readline()
            self.assertEqual(line, f"* {exists + 1} EXISTS")
            self.assertLess(time.monotonic() - started, 5)
            a.send("DONE")
            self.assertTrue(a.readline().startswith("idle1 OK"))
        finally:
            a.close()

    def test_many_concurrent_connections(self):
        import threading
        errors = []
        tag = uuid.uuid4().hex[:10]

        def worker(n):
            try:
                deliver("bob@example.com", f"concurrent {tag} {n}")
                client = imap(BOB)
                ok(client.select("INBOX", readonly=True))
                client.logout()
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        client = imap(BOB)
        try:
            self.assertEqual(len(uids_in(client, "INBOX", f'SUBJECT "concurrent {tag}"')), 24)
        finally:
            client.logout()

    def test_bad_input_is_a_protocol_error(self):
        a = Raw(ALICE)
        try:
            a.send("x1 FROBNICATE")
            self.assertTrue(a.readline().startswith("x1 BAD"))
            a.send("x2 FETCH")
            self.assertTrue(a.readline().startswith("x2 BAD"))
            a.send("x3 UID FETCH 1:* (FLAGS)")
            self.assertTrue(a.readline().startswith("x3 BAD"))  # nothing selected
            a.command("NOOP")
        finally:
            a.close()


@unittest.skipUnless(PHASE == "1" and os.environ.get("MAILSERVER_IMAPS"), "phase 1 with a certificate")
class Tls(unittest.TestCase):
    def context(self):
        import ssl
        ctx = ssl.create_default_context(cafile=os.environ["MAILSERVER_CA"])
        ctx.check_hostname = False
        return ctx

    def test_implicit_tls(self):
        host, port = os.environ["MAILSERVER_IMAPS"].rsplit(":", 1)
        client = imaplib.IMAP4_SSL(host, int(port), ssl_context=self.context(), timeout=30)
        try:
            ok(client.login(*ALICE))
            ok(client.select("INBOX"))
            ok(client.noop())
        finally:
            client.logout()

    def test_starttls(self):
        client = imaplib.IMAP4(IMAP_HOST, int(IMAP_PORT), timeout=30)
        try:
            self.assertIn("STARTTLS", client.capabilities)
            ok(client.starttls(ssl_context=self.context()))
            self.assertNotIn("STARTTLS", client.capabilities)
            ok(client.login(*BOB))
            ok(client.select("INBOX"))
        finally:
            client.logout()


@unittest.skipUnless(PHASE == "1", "phase 1")
class Seed(unittest.TestCase):
    def test_seed_for_restart(self):
        deliver("alice@example.com", "survives a restart")
        client = imap()
        try:
            [uid] = uids_in(client, "INBOX", 'SUBJECT "survives a restart"')
            ok(client.uid("STORE", str(uid), "+FLAGS", "(\\Flagged)"))
        finally:
            client.logout()


@unittest.skipUnless(PHASE == "2", "phase 2")
class AfterRestart(unittest.TestCase):
    def test_everything_survived(self):
        client = imap()
        try:
            uids = uids_in(client, "INBOX", 'SUBJECT "survives a restart" FLAGGED')
            self.assertEqual(len(uids), 1)
            data = ok(client.uid("FETCH", str(uids[0]), "(BODY.PEEK[TEXT])"))
            self.assertIn(b"Hello from the tests.", data[0][1])
        finally:
            client.logout()
        # Delivery still works after the restart.
        deliver("alice@example.com", "after the restart")
        client = imap()
        try:
            self.assertEqual(len(uids_in(client, "INBOX", 'SUBJECT "after the restart"')), 1)
        finally:
            client.logout()


if __name__ == "__main__":
    unittest.main()
