#!/usr/bin/env node
// A grantkeeper job worker in Node (18 or later), with no dependencies.
//
// It makes a job over every user whose grant holds drive.appdata (or works on the job given
// with --job ID), then works on its users until the job is finished: it lists each user's Drive
// app folder through grantkeeper's proxy and reports each user done or failed.
//
// It keeps --concurrency users in work at all times: each user starts as soon as a place frees
// (a slow user holds one place, not a batch), the next batch is claimed while the last one is
// still being worked on, and completions are reported in the background, in groups. When a
// claim finds nothing due (the job's last users are in other workers' hands), it claims again
// soon, then less and less often, until the job is finished.
//
//   GRANTKEEPER_URL=http://127.0.0.1:8080 GRANTKEEPER_API_KEY=$(cat .grantkeeper/dev-api-key) \
//       node examples/drive_worker.mjs [--job ID] [--batch 50] [--concurrency 50]
//
// The API key needs the `jobs` and `proxy` scopes. One line of JSON per user goes to stdout:
// {"sub", "files"} or {"sub", "error"}; the last line is the job.

const DRIVE_APPDATA = "https://www.googleapis.com/auth/drive.appdata";
// Completions are reported when this many wait, or when the oldest waited this long (ms).
const REPORT_EVERY = 50;
const REPORT_AFTER = 200;
// After an empty claim the next comes this soon, then twice as late each time, up to MAX_POLL.
const FIRST_POLL = 50;
const MAX_POLL = 2000;
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

// One user's work: the line to print and the report.
async function workOn(item) {
  try {
    const files = await listAppFolder(item.sub);
    return [{ sub: item.sub, files }, { id: item.id, outcome: "done" }];
  } catch (error) {
    const detail = String(error.message);
    return [{ sub: item.sub, error: detail }, { id: item.id, outcome: "failed", detail: detail.slice(0, 200) }];
  }
}

// Users in work through a window of `concurrency` places (one lane each), claimed ahead by a
// feeder, reported behind in groups.
async function work(job, batch, concurrency) {
  const queue = []; // {lease, item}: claimed, not started
  let finished = false;
  let failure = null;
  let feederWaits = null; // wakes the feeder when the queue has room
  const lanesWaiting = []; // wake lanes when users are queued or the job is finished
  const wakeLanes = () => lanesWaiting.splice(0).forEach((wake) => wake());

  const unreported = new Map(); // lease: [report]
  let waiting = 0;
  const sending = new Set();
  const flush = () => {
    for (const [lease, items] of unreported) {
      const sent = call("POST", `/v1/jobs/${job}/reports`, { lease, items }).then((report) => {
        // 409: the lease ran out and another worker took these users; they are its now.
        if (report.status !== 200 && report.status !== 409) {
          failure ??= new Error(`report refused: ${JSON.stringify(report.body)}`);
        }
      });
      sending.add(sent);
      sent.finally(() => sending.delete(sent));
    }
    unreported.clear();
    waiting = 0;
  };
  const timer = setInterval(() => waiting > 0 && flush(), REPORT_AFTER);

  // Claims a batch whenever the queue has room for one, so that no lane waits for a claim.
  async function feed() {
    let emptyClaims = 0;
    while (!finished && failure === null) {
      if (queue.length >= concurrency) {
        await new Promise((wake) => (feederWaits = wake));
        continue;
      }
      const claim = await call("POST", `/v1/jobs/${job}/claim`, { max: batch, worker: "node" });
      if (claim.status !== 200) throw new Error(`claim refused: ${JSON.stringify(claim.body)}`);
      const { items, lease } = claim.body;
      if (items.length > 0) {
        emptyClaims = 0;
        for (const item of items) queue.push({ lease, item });
        wakeLanes();
      } else if (claim.body.job.state !== "running") {
        finished = true;
        wakeLanes();
      } else {
        // Nothing due: the job's last users are in other workers' hands (or due later).
        emptyClaims += 1;
        const hint = (claim.body.retry_after ?? MAX_POLL / 1000) * 1000;
        await sleep(Math.max(Math.min(FIRST_POLL * 2 ** (emptyClaims - 1), MAX_POLL, hint), FIRST_POLL));
      }
    }
  }

  // One place of the window: a user at a time, the next as soon as this one is through.
  async function lane() {
    for (;;) {
      const next = queue.shift();
      if (next === undefined) {
        if (finished || failure !== null) return;
        // Nothing queued: what is done is reported now rather than wait.
        if (waiting > 0) flush();
        await new Promise((wake) => lanesWaiting.push(wake));
        continue;
      }
      feederWaits?.();
      const [line, report] = await workOn(next.item);
      console.log(JSON.stringify(line));
      if (!unreported.has(next.lease)) unreported.set(next.lease, []);
      unreported.get(next.lease).push(report);
      waiting += 1;
      if (waiting >= REPORT_EVERY) flush();
    }
  }

  try {
    const lanes = Array.from({ length: concurrency }, () => lane());
    await feed();
    // A report refused ends the feeder: the lanes waiting for users end too.
    wakeLanes();
    await Promise.all(lanes);
  } finally {
    clearInterval(timer);
    flush();
    await Promise.all(sending);
  }
  if (failure !== null) throw failure;
}

async function main() {
  const batch = Number(option("--batch", "50"));
  const concurrency = Math.max(Number(option("--concurrency", String(batch))), 1);
  let job = option("--job", null);
  if (job === null) {
    const made = await call("POST", "/v1/jobs", { name: option("--name", "drive app folders (node)"), scopes: [DRIVE_APPDATA] });
    if (made.status !== 201) throw new Error(`could not make the job: ${JSON.stringify(made.body)}`);
    job = made.body.id;
  }
  await work(job, batch, concurrency);
  const done = await call("GET", `/v1/jobs/${job}`);
  console.log(JSON.stringify({ job: done.body }));
}

main().catch((error) => {
  console.error(String(error.message ?? error));
  process.exit(1);
});
