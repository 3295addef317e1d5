#!/usr/bin/env python3
"""A grantkeeper job worker in Python, with the standard library only.

It makes a job over every user whose grant holds drive.appdata (or works on the job given with
--job), then works on its users until the job is finished: it lists each user's Drive app
folder through grantkeeper's proxy and reports each user done or failed.

It keeps --concurrency users in work at all times: each user starts as soon as a place frees
(a slow user holds one place, not a batch), the next batch is claimed while the last one is
still being worked on, and completions are reported in the background, in groups. When a
claim finds nothing due (the job's last users are in other workers' hands), it claims again
soon, then less and less often, until the job is finished.

    GRANTKEEPER_URL=http://127.0.0.1:8080 GRANTKEEPER_API_KEY=$(cat .grantkeeper/dev-api-key) \
        python3 examples/drive_worker.py [--job ID] [--batch 50] [--concurrency 50]

The API key needs the `jobs` and `proxy` scopes (the dev key has every scope). One line of
JSON per user goes to stdout: {"sub", "files"} or {"sub", "error"}; the last line is the job.
"""

import argparse
import collections
import concurrent.futures
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DRIVE_APPDATA = "https://www.googleapis.com/auth/drive.appdata"
# Completions are reported when this many wait, or when the oldest waited this long.
REPORT_EVERY = 50
REPORT_AFTER = 0.2
# After an empty claim the next comes this soon, then twice as late each time, up to MAX_POLL.
FIRST_POLL = 0.05
MAX_POLL = 2.0


class Api:
    def __init__(self, base, key):
        self.base = base.rstrip("/")
        self.key = key

    def call(self, method, path, body=None):
        """JSON in, (status, JSON out); grantkeeper's errors are {"error", "message"}."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": "Bearer " + self.key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            text = error.read()
            try:
                return error.code, json.loads(text)
            except ValueError:
                return error.code, {"error": "http", "message": text.decode(errors="replace")}


def list_app_folder(api, sub):
    """The names of the user's files in their Drive app folder, called as the user."""
    query = urllib.parse.urlencode({"spaces": "appDataFolder", "fields": "files(id,name)"})
    status, body = api.call("GET", "/v1/users/%s/google/drive/v3/files?%s" % (urllib.parse.quote(sub), query))
    if status != 200:
        raise RuntimeError("Drive answered %s: %s" % (status, (body or {}).get("error", "")))
    return [f.get("name") for f in body.get("files", [])]


def work_on(api, item):
    """One user's work, on a thread of the pool: (line to print, report)."""
    try:
        files = list_app_folder(api, item["sub"])
        return {"sub": item["sub"], "files": files}, {"id": item["id"], "outcome": "done"}
    except Exception as error:  # one user's failure is reported, not fatal
        detail = str(error)
        return {"sub": item["sub"], "error": detail}, {"id": item["id"], "outcome": "failed", "detail": detail[:200]}


class Worker:
    """Users in work through a window of `concurrency` places, claimed ahead, reported behind."""

    def __init__(self, api, job, batch, concurrency):
        self.api, self.job, self.batch, self.concurrency = api, job, batch, concurrency
        self.places = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency)
        # Claims and reports go out beside the work, never in its way.
        self.calls = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        self.queue = collections.deque()  # (lease, item): claimed, not started
        self.running = {}  # future: lease
        self.unreported = {}  # lease: [report]
        self.oldest = None  # when the oldest unreported completion came
        self.sending = set()
        self.claiming = None
        self.next_claim = 0.0
        self.empty_claims = 0
        self.finished = False

    def run(self):
        while True:
            now = time.monotonic()
            self.claim_ahead(now)
            self.start_work()
            self.report_if_due(now)
            if self.finished and not (self.queue or self.running or self.unreported or self.sending or self.claiming):
                return
            waits = set(self.running) | self.sending | ({self.claiming} if self.claiming else set())
            timeout = REPORT_AFTER
            if self.claiming is None and not self.finished and len(self.queue) < self.concurrency:
                timeout = min(timeout, max(self.next_claim - now, 0.0))
            if not waits:
                time.sleep(timeout)
                continue
            ready, _ = concurrent.futures.wait(waits, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in ready:
                if future is self.claiming:
                    self.claimed(future.result())
                elif future in self.running:
                    self.worked(self.running.pop(future), future.result())
                else:
                    self.sending.discard(future)
                    self.reported(future.result())

    def claim_ahead(self, now):
        """A batch is claimed as soon as the queue has room for it: never wait for a claim."""
        if self.finished or self.claiming or len(self.queue) >= self.concurrency or now < self.next_claim:
            return
        body = {"max": self.batch, "worker": "python"}
        self.claiming = self.calls.submit(self.api.call, "POST", "/v1/jobs/%d/claim" % self.job, body)

    def claimed(self, answer):
        self.claiming = None
        status, claim = answer
        if status != 200:
            sys.exit("claim refused: %s" % claim)
        if claim["items"]:
            self.empty_claims = 0
            self.queue.extend((claim["lease"], item) for item in claim["items"])
        elif claim["job"]["state"] != "running":
            self.finished = True
        else:
            # Nothing due: the job's last users are in other workers' hands (or due later).
            self.empty_claims += 1
            wait = min(FIRST_POLL * 2 ** (self.empty_claims - 1), MAX_POLL, claim.get("retry_after") or MAX_POLL)
            self.next_claim = time.monotonic() + max(wait, FIRST_POLL)

    def start_work(self):
        while self.queue and len(self.running) < self.concurrency:
            lease, item = self.queue.popleft()
            self.running[self.places.submit(work_on, self.api, item)] = lease

    def worked(self, lease, result):
        line, report = result
        print(json.dumps(line), flush=True)
        self.unreported.setdefault(lease, []).append(report)
        if self.oldest is None:
            self.oldest = time.monotonic()

    def report_if_due(self, now):
        waiting = sum(len(reports) for reports in self.unreported.values())
        idle = not self.running and not self.queue
        if not waiting or not (waiting >= REPORT_EVERY or now - self.oldest >= REPORT_AFTER or idle):
            return
        for lease, reports in self.unreported.items():
            body = {"lease": lease, "items": reports}
            self.sending.add(self.calls.submit(self.api.call, "POST", "/v1/jobs/%d/reports" % self.job, body))
        self.unreported, self.oldest = {}, None

    def reported(self, answer):
        status, body = answer
        # 409: the lease ran out and another worker took these users: they are its now.
        if status not in (200, 409):
            sys.exit("report refused: %s" % body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=int, help="work on this job instead of making one")
    parser.add_argument("--batch", type=int, default=50, help="users claimed at a time")
    parser.add_argument("--concurrency", type=int, help="users in work at once (default: --batch)")
    parser.add_argument("--name", default="drive app folders (python)")
    args = parser.parse_args()
    api = Api(os.environ.get("GRANTKEEPER_URL", "http://127.0.0.1:8080"), os.environ["GRANTKEEPER_API_KEY"])

    job = args.job
    if job is None:
        status, body = api.call("POST", "/v1/jobs", {"name": args.name, "scopes": [DRIVE_APPDATA]})
        if status != 201:
            sys.exit("could not make the job: %s" % body)
        job = body["id"]

    Worker(api, job, args.batch, max(args.concurrency or args.batch, 1)).run()

    status, body = api.call("GET", "/v1/jobs/%d" % job)
    print(json.dumps({"job": body}), flush=True)


if __name__ == "__main__":
    main()
