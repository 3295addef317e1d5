#!/usr/bin/env python3
"""A grantkeeper job worker in Python, with the standard library only.

It makes a job over every user whose grant holds drive.appdata (or works on the job given with
--job), then claims batches of users until the job is finished, lists each user's Drive app
folder through grantkeeper's proxy, and reports each user done, retry or failed.

    GRANTKEEPER_URL=http://127.0.0.1:8080 GRANTKEEPER_API_KEY=$(cat .grantkeeper/dev-api-key) \
        python3 examples/drive_worker.py [--job ID] [--batch 50]

The API key needs the `jobs` and `proxy` scopes (the dev key has every scope). One line of
JSON per user goes to stdout: {"sub", "files"} or {"sub", "error"}; the last line is the job.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DRIVE_APPDATA = "https://www.googleapis.com/auth/drive.appdata"


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=int, help="work on this job instead of making one")
    parser.add_argument("--batch", type=int, default=50, help="users claimed at a time")
    parser.add_argument("--name", default="drive app folders (python)")
    args = parser.parse_args()
    api = Api(os.environ.get("GRANTKEEPER_URL", "http://127.0.0.1:8080"), os.environ["GRANTKEEPER_API_KEY"])

    job = args.job
    if job is None:
        status, body = api.call("POST", "/v1/jobs", {"name": args.name, "scopes": [DRIVE_APPDATA]})
        if status != 201:
            sys.exit("could not make the job: %s" % body)
        job = body["id"]

    while True:
        status, claim = api.call("POST", "/v1/jobs/%d/claim" % job, {"max": args.batch, "worker": "python"})
        if status != 200:
            sys.exit("claim refused: %s" % claim)
        if not claim["items"]:
            if claim["job"]["state"] != "running":
                break
            time.sleep(min(max(claim.get("retry_after") or 1, 0.1), 5))
            continue
        reports = []
        for item in claim["items"]:
            try:
                files = list_app_folder(api, item["sub"])
                print(json.dumps({"sub": item["sub"], "files": files}), flush=True)
                reports.append({"id": item["id"], "outcome": "done"})
            except Exception as error:  # one user's failure is reported, not fatal
                print(json.dumps({"sub": item["sub"], "error": str(error)}), flush=True)
                reports.append({"id": item["id"], "outcome": "failed", "detail": str(error)[:200]})
        status, body = api.call("POST", "/v1/jobs/%d/reports" % job, {"lease": claim["lease"], "items": reports})
        if status == 409:
            # The lease ran out and another worker took these users: they are its now.
            continue
        if status != 200:
            sys.exit("report refused: %s" % body)

    status, body = api.call("GET", "/v1/jobs/%d" % job)
    print(json.dumps({"job": body}), flush=True)


if __name__ == "__main__":
    main()
