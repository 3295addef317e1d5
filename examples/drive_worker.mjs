#!/usr/bin/env node
// A grantkeeper job worker in Node (18 or later), with no dependencies.
//
// It makes a job over every user whose grant holds drive.appdata (or works on the job given
// with --job ID), then claims batches of users until the job is finished, lists each user's
// Drive app folder through grantkeeper's proxy (the users of a batch at once), and reports each
// user done or failed.
//
//   GRANTKEEPER_URL=http://127.0.0.1:8080 GRANTKEEPER_API_KEY=$(cat .grantkeeper/dev-api-key) \
//       node examples/drive_worker.mjs [--job ID] [--batch 50]
//
// The API key needs the `jobs` and `proxy` scopes. One line of JSON per user goes to stdout:
// {"sub", "files"} or {"sub", "error"}; the last line is the job.

const DRIVE_APPDATA = "https://www.googleapis.com/auth/drive.appdata";
const base = (process.env.GRANTKEEPER_URL ?? "http://127.0.0.1:8080").replace(/\/$/, "");
const key = process.env.GRANTKEEPER_API_KEY;
if (!key) {
  console.error("GRANTKEEPER_API_KEY is not set");
  process.exit(2);
}

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at > 0 && process.argv[at + 1] !== undefined ? process.argv[at + 1] : fallback;
}

// JSON in, {status, body} out; grantkeeper's errors are {"error", "message"}.
async function call(method, path, body) {
  const answer = await fetch(base + path, {
    method,
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await answer.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { error: "http", message: text };
  }
  return { status: answer.status, body: parsed };
}

// The names of the user's files in their Drive app folder, called as the user.
async function listAppFolder(sub) {
  const query = new URLSearchParams({ spaces: "appDataFolder", fields: "files(id,name)" });
  const { status, body } = await call("GET", `/v1/users/${encodeURIComponent(sub)}/google/drive/v3/files?${query}`);
  if (status !== 200) throw new Error(`Drive answered ${status}: ${body?.error ?? ""}`);
  return (body.files ?? []).map((f) => f.name);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const batch = Number(option("--batch", "50"));
  let job = option("--job", null);
  if (job === null) {
    const made = await call("POST", "/v1/jobs", { name: option("--name", "drive app folders (node)"), scopes: [DRIVE_APPDATA] });
    if (made.status !== 201) throw new Error(`could not make the job: ${JSON.stringify(made.body)}`);
    job = made.body.id;
  }
  for (;;) {
    const claim = await call("POST", `/v1/jobs/${job}/claim`, { max: batch, worker: "node" });
    if (claim.status !== 200) throw new Error(`claim refused: ${JSON.stringify(claim.body)}`);
    const { items, lease } = claim.body;
    if (items.length === 0) {
      if (claim.body.job.state !== "running") break;
      await sleep(Math.min(Math.max(claim.body.retry_after ?? 1, 0.1), 5) * 1000);
      continue;
    }
    const reports = await Promise.all(
      items.map(async (item) => {
        try {
          const files = await listAppFolder(item.sub);
          console.log(JSON.stringify({ sub: item.sub, files }));
          return { id: item.id, outcome: "done" };
        } catch (error) {
          console.log(JSON.stringify({ sub: item.sub, error: String(error.message) }));
          return { id: item.id, outcome: "failed", detail: String(error.message).slice(0, 200) };
        }
      }),
    );
    const report = await call("POST", `/v1/jobs/${job}/reports`, { lease, items: reports });
    // 409: the lease ran out and another worker took these users; they are its now.
    if (report.status !== 200 && report.status !== 409) {
      throw new Error(`report refused: ${JSON.stringify(report.body)}`);
    }
  }
  const done = await call("GET", `/v1/jobs/${job}`);
  console.log(JSON.stringify({ job: done.body }));
}

main().catch((error) => {
  console.error(String(error.message ?? error));
  process.exit(1);
});
