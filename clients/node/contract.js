// The API contract walked through from Node.js, as a developer in another language meets it. Run by
// tests/system/test_node_client.py against real services; exits non-zero on the first broken promise.
//   QUAERO_MANAGER, QUAERO_EXECUTOR, QUAERO_API_TOKEN, START_URL, COOKIE_DOMAIN, SESSION
"use strict";

const assert = require("node:assert/strict");
const {api, connect, errorDetails, toStruct, fromStruct} = require("./quaero");

const env = (name) => { const value = process.env[name]; if (!value) throw new Error(`${name} is not set`); return value; };
const token = env("QUAERO_API_TOKEN");
const jobs = connect(env("QUAERO_MANAGER"), token, api.manager.v1.JobManager);
const auth = connect(env("QUAERO_MANAGER"), token, api.manager.v1.AuthStore);
const definitions = connect(env("QUAERO_MANAGER"), token, api.manager.v1.JobDefinitions);
const documents = connect(env("QUAERO_MANAGER"), token, api.manager.v1.Documents);
const executor = connect(env("QUAERO_EXECUTOR"), token, api.executor.v1.Executor, 30);
const checked = [];

async function refused(call, code, reason, field) {
  try {
    await call();
  } catch (error) {
    const found = errorDetails(error);
    assert.equal(found.code, code, `${reason}: code ${found.code} (${found.message})`);
    assert.equal(found.reason, reason, found.message);
    if (field !== undefined) assert.equal(found.field, field);
    return found;
  }
  assert.fail(`expected ${reason}`);
}

function watchUntilDone(jobId) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const stream = jobs.WatchJob({job_id: jobId});
    stream.on("data", (job) => seen.push(job));
    stream.on("error", reject);
    stream.on("end", () => resolve(seen));
  });
}

async function main() {
  // Create, merge (RFC 7396) and replace, with Structs built from plain objects.
  const job = await jobs.CreateJob({type: "node", name: "from node", request_id: `node-${Date.now()}`,
                                    metadata: toStruct({auth_id: "site", progress: {done: 1, of: 3}})});
  let updated = await jobs.UpdateJobMetadata({job_id: job.id, metadata: toStruct({progress: {done: 2}, note: "hi"})});
  assert.deepEqual(fromStruct(updated.metadata), {auth_id: "site", progress: {done: 2, of: 3}, note: "hi"});
  updated = await jobs.UpdateJobMetadata({job_id: job.id, metadata: toStruct({note: null})});
  assert.deepEqual(fromStruct(updated.metadata), {auth_id: "site", progress: {done: 2, of: 3}});
  updated = await jobs.UpdateJobMetadata({job_id: job.id, mode: "UPDATE_MODE_REPLACE",
                                          metadata: toStruct({auth_id: "other"})});
  assert.deepEqual(fromStruct(updated.metadata), {auth_id: "other"});
  checked.push("merge-and-replace");

  // The metadata etag: progress leaves it alone, a stale one is ABORTED with its details decoded.
  await jobs.UpdateJobStatus({job_id: job.id, status: "JOB_STATUS_RUNNING"});
  const moved = await jobs.UpdateJobProgress({job_id: job.id, progress_current: "1", progress_total: "5"});
  assert.equal(moved.metadata_etag, updated.metadata_etag);
  assert.notEqual(moved.etag, updated.etag);
  const fresh = await jobs.UpdateJobMetadata({job_id: job.id, etag: moved.metadata_etag,
                                              metadata: toStruct({phase: "crawl"})});
  await refused(() => jobs.UpdateJobMetadata({job_id: job.id, etag: moved.metadata_etag,
                                              metadata: toStruct({phase: "late"})}), 10, "ETAG_MISMATCH", "etag");
  checked.push("etag");

  // A misspelt field leaves a Value with no kind: refused with its path, never read as null.
  await refused(() => jobs.UpdateJobMetadata({job_id: job.id, metadata: {fields: {phase: {}}}}), 3,
                "INVALID_VALUE", "metadata.phase");
  assert.equal(fromStruct((await jobs.GetJob({job_id: job.id})).metadata).phase, "crawl");
  await refused(() => jobs.GetJob({job_id: "not-a-job"}), 3, "INVALID_JOB_ID", "job_id");
  checked.push("error-details");

  // Paging: opaque tokens, bound to the filters.
  await jobs.BatchCreateChildJobs({parent_id: job.id, children: [1, 2, 3, 4, 5].map((n) => (
    {type: "node_child", name: `child ${n}`, dedup_key: `c${n}`}))});
  const names = [];
  let pageToken = "";
  do {
    const page = await jobs.ListJobs({parent_id: job.id, page_size: 2, page_token: pageToken});
    names.push(...page.jobs.map((child) => child.name));
    pageToken = page.next_page_token;
    if (pageToken && names.length === 2) {
      await refused(() => jobs.ListJobs({parent_id: "", page_token: pageToken}), 3, "PAGE_TOKEN_MISMATCH");
    }
  } while (pageToken);
  assert.deepEqual(names.sort(), ["child 1", "child 2", "child 3", "child 4", "child 5"]);
  checked.push("paging");

  // WatchJob: the job as it is, then each change, ending once it is terminal.
  const watched = await jobs.CreateJob({type: "node", name: "watched"});
  const stream = watchUntilDone(watched.id);
  await new Promise((resolve) => setTimeout(resolve, 200));
  await jobs.UpdateJobStatus({job_id: watched.id, status: "JOB_STATUS_RUNNING"});
  await jobs.UpdateJobStatus({job_id: watched.id, status: "JOB_STATUS_COMPLETED"});
  const seen = await stream;
  assert.equal(seen.at(-1).status, "JOB_STATUS_COMPLETED");
  assert.ok(seen.length >= 2);
  checked.push("watch");

  // One authenticated crawl: credentials (host-only cookie by default), a definition, a run.
  const site = env("COOKIE_DOMAIN");
  const stored = await auth.PutCredentials({id: "node-site", site_domain: site,
                                            cookies: [{name: "session", value: env("SESSION"), domain: site}]});
  assert.equal(stored.cookies[0].include_subdomains, false);
  assert.ok(!JSON.stringify(stored).includes(env("SESSION")), "PutCredentials echoed a cookie value");
  await refused(() => auth.GetCredentials({id: "node-site"}), 7, "ROLE_NOT_ALLOWED");
  await definitions.CreateJobDefinition({job_definition: {
    id: "node-crawl", name: "crawl from node", auth_id: "node-site",
    crawl: {start_urls: [env("START_URL")], max_depth: 2, allowed_networks: ["127.0.0.1/32"]}}});
  const run = await executor.ExecuteJobDefinition({definition_id: "node-crawl", request_id: `run-${Date.now()}`});
  assert.ok(run.metadata_persisted);
  const states = await watchUntilDone(run.parent_job_id);
  const parent = states.at(-1);
  assert.equal(parent.status, "JOB_STATUS_COMPLETED", parent.error);
  assert.equal(fromStruct(parent.metadata).auth_id, "node-site");
  const crawled = await documents.ListDocuments({parent_job_id: run.parent_job_id, omit_text: true});
  assert.ok(crawled.documents.length >= 2);
  const cancelled = await executor.CancelExecution({parent_job_id: run.parent_job_id});
  assert.equal(cancelled.parent_status, "JOB_STATUS_COMPLETED");
  checked.push("crawl");

  console.log(JSON.stringify({checked, documents: crawled.documents.length,
                              titles: crawled.documents.map((d) => d.title).sort()}));
  for (const stub of [jobs, auth, definitions, documents, executor]) stub.client.close();
}

main().catch((error) => {
  const found = error && error.code !== undefined ? errorDetails(error) : {};
  console.error(`contract broken: ${error && error.stack ? error.stack : error} ${JSON.stringify(found)}`);
  process.exit(1);
});
